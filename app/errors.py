"""Problems (RFC 9457): exceptions that become application/problem+json responses."""
import logging

from flask import jsonify
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)

PROBLEM_TYPE = "https://patron.dev/problems/"


class Problem(Exception):
    """A client-visible failure with a stable kebab-case ``code``.

    Extra keyword arguments become members of the problem body (e.g. ``needed``, ``errors``).
    """

    def __init__(self, status, code, title, detail=None, **extra):
        super().__init__(detail or title)
        self.status = status
        self.code = code
        self.title = title
        self.detail = detail
        self.extra = extra

    def to_dict(self):
        body = {"type": PROBLEM_TYPE + self.code, "title": self.title, "status": self.status,
                "code": self.code}
        if self.detail:
            body["detail"] = self.detail
        body.update(self.extra)
        return body


def not_found(what, ident):
    return Problem(404, "not-found", "Not found", f"{what} {ident!r} does not exist")


def validation_failed(errors, detail=None):
    """422 listing every field error: [{"pointer": "/a/b", "message": "...", "validator": "..."}]."""
    return Problem(422, "validation-failed", "Validation failed",
                   detail or f"{len(errors)} field error(s)", errors=errors)


def problem_response(problem):
    resp = jsonify(problem.to_dict())
    resp.status_code = problem.status
    resp.mimetype = "application/problem+json"
    return resp


_HTTP_CODES = {400: "bad-request", 401: "unauthorized", 403: "forbidden", 404: "not-found",
               405: "method-not-allowed", 409: "conflict", 413: "payload-too-large",
               415: "unsupported-media-type", 429: "too-many-requests"}


# Seconds a client is told to wait before retrying when the database is unavailable.
RETRY_AFTER_SECONDS = 5


def database_unavailable():
    return Problem(503, "database-unavailable", "Database unavailable",
                   "The database did not answer in time or refused the connection; retry later.")


def register_error_handlers(app):
    import peewee
    from playhouse.pool import MaxConnectionsExceeded

    @app.errorhandler(Problem)
    def _problem(exc):
        resp = problem_response(exc)
        if getattr(exc, "replayed", False):  # a refusal stored under the Idempotency-Key
            resp.headers["Idempotent-Replayed"] = "true"
        if exc.status in (429, 503) and exc.extra.get("retry_after"):
            resp.headers["Retry-After"] = str(exc.extra["retry_after"])
        return resp

    def _unavailable(exc):
        # connection refused or timed out, statement/lock timeout, server gone, pool exhausted:
        # the request may well succeed later, so say so instead of a 500
        log.warning("database unavailable: %s: %s", type(exc).__name__, str(exc).strip()[:200])
        resp = problem_response(database_unavailable())
        resp.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return resp

    for cls in (peewee.OperationalError, peewee.InterfaceError, MaxConnectionsExceeded):
        app.register_error_handler(cls, _unavailable)

    @app.errorhandler(HTTPException)
    def _http(exc):
        code = _HTTP_CODES.get(exc.code, "http-error")
        resp = problem_response(Problem(exc.code, code, exc.name, exc.description))
        if exc.code == 405 and getattr(exc, "valid_methods", None):
            resp.headers["Allow"] = ", ".join(exc.valid_methods)
        return resp

    @app.errorhandler(Exception)
    def _unexpected(exc):
        log.exception("unhandled error")
        return problem_response(Problem(500, "internal-error", "Internal server error",
                                        "An unexpected error occurred; it has been logged."))
