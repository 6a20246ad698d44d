"""Structured JSON logs with a request id per request."""
import json
import logging
import sys
import time
import uuid

from flask import g, request

_configured = False


class JsonFormatter(logging.Formatter):
    def format(self, record):
        out = {"ts": round(record.created, 3), "level": record.levelname, "logger": record.name,
               "msg": record.getMessage()}
        for key in ("request_id", "method", "path", "status", "ms"):
            if hasattr(record, key):
                out[key] = getattr(record, key)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def configure(level="INFO"):
    global _configured
    if _configured:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("werkzeug").setLevel("WARNING")
    _configured = True


def install_request_logging(app):
    log = logging.getLogger("patron.http")

    @app.before_request
    def _start():
        g.request_id = request.headers.get("X-Request-Id") or uuid.uuid4().hex
        g.started = time.perf_counter()

    @app.after_request
    def _finish(resp):
        ms = round((time.perf_counter() - g.get("started", time.perf_counter())) * 1000, 2)
        resp.headers["X-Request-Id"] = g.get("request_id", "")
        from app.metrics import observe_request
        observe_request(request.method, request.url_rule.rule if request.url_rule else "unmatched",
                        resp.status_code, ms / 1000)
        log.debug("request", extra={"request_id": g.get("request_id"), "method": request.method,
                                    "path": request.path, "status": resp.status_code, "ms": ms})
        return resp
