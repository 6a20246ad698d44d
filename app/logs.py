"""Structured JSON logs with a request id per request."""
import json
import logging
import re
import sys
import time
import uuid

from flask import g, has_request_context, request

from app.metrics import observe_request

_configured = False
# An incoming X-Request-Id is echoed only if it is harmless in logs and headers.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_FIELDS = ("request_id", "method", "path", "status", "ms", "client", "job")


class RequestIdFilter(logging.Filter):
    """Stamp every record logged while serving a request with that request's id."""

    def filter(self, record):
        if not hasattr(record, "request_id") and has_request_context():
            rid = g.get("request_id")
            if rid:
                record.request_id = rid
        return True


_MOBILE = re.compile(r"(?<!\d)(1[3-9]\d)(\d{4})(\d{4})(?!\d)")


class PersonalDataFilter(logging.Filter):
    """Mask mobile numbers (138****5678) in a record before any handler sees it (SQL debug logs carry params)."""

    def filter(self, record):
        try:
            text = record.getMessage()
        except Exception:  # a malformed record is not ours to fix
            return True
        masked = _MOBILE.sub(lambda m: f"{m.group(1)}****{m.group(3)}", text)
        if masked != text:
            record.msg, record.args = masked, ()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record):
        out = {"ts": round(record.created, 3), "level": record.levelname, "logger": record.name,
               "msg": record.getMessage()}
        for key in _FIELDS:
            if hasattr(record, key):
                out[key] = getattr(record, key)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def configure(level="INFO"):
    """One JSON handler on the root logger (idempotent: the CLI and tests build several apps)."""
    global _configured
    if _configured:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestIdFilter())
    handler.addFilter(PersonalDataFilter())
    for name in ("peewee", "patron"):  # loggers that may carry personal data; filtered before any handler
        logging.getLogger(name).addFilter(PersonalDataFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("werkzeug").setLevel("WARNING")
    _configured = True


def request_id():
    """The current request's id (incoming X-Request-Id if well-formed, else a new one)."""
    return g.get("request_id") if has_request_context() else None


def install_request_logging(app):
    log = logging.getLogger("patron.http")

    @app.before_request
    def _start():
        incoming = request.headers.get("X-Request-Id", "")
        g.request_id = incoming if _REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
        g.started = time.perf_counter()

    @app.after_request
    def _finish(resp):
        req, ctx = request._get_current_object(), g._get_current_object()  # one proxy lookup each
        ms = round((time.perf_counter() - ctx.get("started", time.perf_counter())) * 1000, 2)
        if "request_id" not in ctx:  # a request refused before before_request ran
            ctx.request_id = uuid.uuid4().hex
        resp.headers["X-Request-Id"] = ctx.request_id
        route = req.url_rule.rule if req.url_rule else "unmatched"
        observe_request(req.method, route, resp.status_code, ms / 1000)
        if log.isEnabledFor(logging.INFO):
            principal = ctx.get("principal")
            # one access line per request, in the same JSON as everything else
            log.info("%s %s %s", req.method, req.path, resp.status_code,
                     extra={"request_id": ctx.request_id, "method": req.method, "path": req.path,
                            "status": resp.status_code, "ms": ms,
                            "client": principal.get("id") if isinstance(principal, dict) else None})
        return resp



def _gunicorn_logger():
    from gunicorn import glogging  # a dependency already (patron serve); imported only by gunicorn

    class GunicornLogger(glogging.Logger):
        """gunicorn's own lines (start-up, worker exits, its errors) as the app's JSON lines."""

        def setup(self, cfg):
            super().setup(cfg)
            for logger in (self.error_log, self.access_log):
                for handler in logger.handlers:
                    handler.setFormatter(JsonFormatter())

    return GunicornLogger


def __getattr__(name):
    # `gunicorn --logger-class app.logs.GunicornLogger` resolves it here, so importing app.logs
    # (every app, every CLI command) does not import gunicorn
    if name == "GunicornLogger":
        return _gunicorn_logger()
    raise AttributeError(name)
