"""Operations: health, readiness, metrics, the OpenAPI document."""
from flask import Blueprint, current_app, jsonify

from app import policy
from app.api import operation
from app.api.openapi import build
from app.db import db
from app.errors import Problem
from app.metrics import render
from app.platform import redis as platform_redis
from app.platform import scheduler as scheduler_health
from app.services.service import live as service_live

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
@operation("Process is alive", public=True, tags=["ops"])
def healthz():
    return jsonify(status="ok")


@bp.get("/readyz")
@operation("Database (and Redis, if configured) reachable", public=True, tags=["ops"],
           problems={503: "not-ready: a dependency is unreachable (the failing check is named)"})
def readyz():
    checks = {}
    try:
        db.execute_sql("SELECT 1").fetchone()
        checks["database"] = "ok"
    except Exception as exc:  # report, don't crash: readiness is exactly this question
        checks["database"] = f"error: {type(exc).__name__}"
    scheduler = None
    if current_app.config.get("REDIS_URL"):
        try:
            conn = platform_redis.connection(current_app.config["REDIS_URL"])
            conn.ping()
            checks["redis"] = "ok"
            scheduler = scheduler_health.health(conn, current_app.config.get("JOBS_QUEUE") or "default")
        except Exception as exc:
            checks["redis"] = f"error: {type(exc).__name__}"
    else:
        scheduler = scheduler_health.health()
    # a failing periodic-job scheduler does not stop this process serving: degraded, not unready
    checks["scheduler"] = f"degraded: {scheduler['error']}" if scheduler else "ok"
    checks["service_fanout"] = service_live.readiness()
    checks["policy_version"] = policy.active_version()
    if any(str(v).startswith("error") for v in checks.values()):
        raise Problem(503, "not-ready", "Not ready", "A dependency is unreachable.", checks=checks)
    return jsonify(status="degraded" if scheduler else "ready", checks=checks)


@bp.get("/metrics")
@operation("Prometheus metrics", public=True, tags=["ops"], response=False,
           content={"text/plain": "Prometheus text exposition format 0.0.4"})
def metrics():
    return render(), 200, {"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}


@bp.get("/openapi.json")
@operation("This OpenAPI 3.1 document", public=True, tags=["ops"])
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
