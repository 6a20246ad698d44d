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
@operation("Database (and Redis, if configured) reachable", public=True, tags=["ops"],
           problems={503: "not-ready: a dependency is unreachable (the failing check is named)"})
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
    from app import policy
    checks["policy_version"] = policy.active_version()
    if any(str(v).startswith("error") for v in checks.values()):
        raise Problem(503, "not-ready", "Not ready", "A dependency is unreachable.", checks=checks)
    return jsonify(status="ready", checks=checks)


@bp.get("/metrics")
@operation("Prometheus metrics", public=True, tags=["ops"], response=False,
           content={"text/plain": "Prometheus text exposition format 0.0.4"})
def metrics():
    from app.metrics import render
    return render(), 200, {"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}


@bp.get("/openapi.json")
@operation("This OpenAPI 3.1 document", public=True, tags=["ops"])
def openapi():
    from app.api.openapi import build
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
