"""Operations: health, readiness, metrics, the OpenAPI document."""
from flask import Blueprint, current_app, jsonify

from app.api import operation
from app.db import db
from app.errors import Problem

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
@operation("Process is alive", public=True, tags=["ops"])
def healthz():
    return jsonify(status="ok")


@bp.get("/readyz")
@operation("Database (and Redis, if configured) reachable", public=True, tags=["ops"])
def readyz():
    checks = {}
    try:
        db.execute_sql("SELECT 1").fetchone()
        checks["database"] = "ok"
    except Exception as exc:  # report, don't crash: readiness is exactly this question
        checks["database"] = f"error: {type(exc).__name__}"
    if current_app.config.get("REDIS_URL"):
        try:
            from jobs import redis_connection
            redis_connection().ping()
            checks["redis"] = "ok"
        except Exception as exc:
            checks["redis"] = f"error: {type(exc).__name__}"
    from app.services.service import live
    checks["service_fanout"] = live.readiness()
    from app import policy
    checks["policy_version"] = policy.active_version()
    if any(str(v).startswith("error") for v in checks.values()):
        raise Problem(503, "not-ready", "Not ready", "A dependency is unreachable.", checks=checks)
    return jsonify(status="ready", checks=checks)


@bp.get("/metrics")
@operation("Prometheus metrics", public=True, tags=["ops"])
def metrics():
    from app.metrics import render
    return render(), 200, {"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}


@bp.get("/openapi.json")
@operation("This OpenAPI 3.1 document", public=True, tags=["ops"])
def openapi():
    from app.api.openapi import build
    return jsonify(build(current_app))
