"""Operations: health, readiness, metrics, the OpenAPI document."""
import threading
import time

from flask import Blueprint, current_app, jsonify

from app import policy
from app.api import operation
from app.api.openapi import build
from app.db import db
from app.errors import Problem
from app.metrics import render
from app.platform import scheduler as scheduler_health
from app.services.service import live as service_live

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
@operation("Process is alive", public=True, tags=["ops"],
           response="api/ops/health.json")
def healthz():
    return jsonify(status="ok")


@bp.get("/readyz")
@operation("Database (and Redis, if configured) reachable; answers within 2 s", public=True, tags=["ops"],
           problems={503: "not-ready: a dependency is unreachable (the failing check is named)"},
           response="api/ops/readiness.json")
def readyz():
    app = current_app._get_current_object()
    checks = app.extensions.setdefault("patron.readiness", Readiness()).checks(app)
    scheduler = checks.pop("_scheduler", None)
    if not app.config.get("REDIS_URL"):
        scheduler = scheduler_health.health()  # this process's ticker: no I/O
    # a failing periodic-job scheduler does not stop this process serving: degraded, not unready
    checks["scheduler"] = f"degraded: {scheduler['error']}" if scheduler else "ok"
    checks["service_fanout"] = service_live.readiness()
    checks["policy_version"] = policy.active_version()  # read now: an apply in this process shows at once
    if any(str(v).startswith("error") for v in checks.values()):
        raise Problem(503, "not-ready", "Not ready", "A dependency is unreachable.", checks=checks)
    return jsonify(status="degraded" if scheduler else "ready", checks=checks)


class Readiness:
    """Dependency checks with a deadline, run at most once at a time and shared by concurrent callers.

    A hung database or Redis costs a caller at most ``DEADLINE`` seconds and never more than one
    thread per dependency: callers arriving while a check runs wait for that same check, and while
    a dependency's previous check is still hung, it is reported ``error: timeout`` at once instead of
    being checked again. (No cache beyond that: a recovery shows on the next call.)
    """
    DEADLINE = 2.0
    CACHE_SECONDS = 0.0

    def __init__(self):
        self._lock = threading.Lock()
        self._result = None  # (monotonic time, checks)
        self._running = {}  # dependency -> Thread still running (possibly hung)
        self._round = None  # threading.Event of the round in progress

    def checks(self, app):
        with self._lock:
            now = time.monotonic()
            if (self._result and now - self._result[0] < self.CACHE_SECONDS
                    and self._result[2] == app.config.get("REDIS_URL")):
                return dict(self._result[1])
            done = self._round
            if done is None:
                done = self._round = threading.Event()
                results = {}
                threading.Thread(target=self._run, args=(app, done, results), daemon=True,
                                 name="readyz").start()
        done.wait(self.DEADLINE)
        with self._lock:
            if self._result and self._result[0] >= now and self._result[2] == app.config.get("REDIS_URL"):
                return dict(self._result[1])
            return {"database": "error: timeout"} | (
                {"redis": "error: timeout"} if app.config.get("REDIS_URL") else {})

    def _run(self, app, done, results):
        deps = {"database": _check_database}
        if app.config.get("REDIS_URL"):
            deps["redis"] = _check_redis
        threads = []
        for name, fn in deps.items():
            if self._running.get(name) is not None and self._running[name].is_alive():
                results[name] = "error: timeout"  # the previous check of it has not come back yet
                continue
            t = threading.Thread(target=self._one, args=(app, name, fn, results), daemon=True,
                                 name=f"readyz-{name}")
            self._running[name] = t
            t.start()
            threads.append(t)
        deadline = time.monotonic() + self.DEADLINE
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        checks = {name: results.get(name, "error: timeout") for name in deps}
        if "_scheduler" in results:
            checks["_scheduler"] = results["_scheduler"]
        with self._lock:
            self._result = (time.monotonic(), checks, app.config.get("REDIS_URL"))
            self._round = None
        done.set()

    @staticmethod
    def _one(app, name, fn, results):
        try:
            with app.app_context():
                fn(app, results)
            results[name] = "ok"
        except Exception as exc:  # report, don't crash: readiness is exactly this question
            results[name] = f"error: {type(exc).__name__}"


def _check_database(app, results):
    with db.connection_context():
        db.execute_sql("SELECT 1").fetchone()
        policy.active()  # adopts another process's activation (at most once a second)


def _check_redis(app, results):
    import redis
    client = _REDIS.get(app.config["REDIS_URL"])
    if client is None:  # its own client: 1 s socket timeouts instead of the job queue's 30 s
        client = _REDIS[app.config["REDIS_URL"]] = redis.Redis.from_url(
            app.config["REDIS_URL"], socket_connect_timeout=1, socket_timeout=1)
    client.ping()
    results["_scheduler"] = scheduler_health.health(client, app.config.get("JOBS_QUEUE") or "default")


_REDIS = {}


@bp.get("/metrics")
@operation("Prometheus metrics", public=True, tags=["ops"], response=False,
           content={"text/plain": "Prometheus text exposition format 0.0.4"})
def metrics():
    return render(), 200, {"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}


@bp.get("/openapi.json")
@operation("This OpenAPI 3.1 document", public=True, tags=["ops"],
           response="api/ops/openapi_document.json")
def openapi():
    return jsonify(build(current_app))


DOCS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Patron API</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><redoc spec-url="{spec}"></redoc><script src="{script}"></script></body></html>
"""


@bp.get("/docs")
@operation("The API reference: /openapi.json rendered by Redoc (served from the app, works offline)",
           public=True, tags=["ops"], response=False, content={"text/html": "the Redoc page"})
def docs():
    from flask import url_for
    page = DOCS_PAGE.format(spec=url_for("ops.openapi"),
                            script=url_for("static", filename="redoc/redoc.standalone.js"))
    return page, 200, {"Content-Type": "text/html; charset=utf-8"}
