"""INTERIM: active policy version (replaced by app/api/policy.py)."""
from flask import Blueprint, jsonify

from app import policy
from app.api import operation

bp = Blueprint("policy_stub", __name__, url_prefix="/v1")


@bp.get("/policies/active")
@operation("Active policy set", scope="policy:read", tags=["policy"])
def active():
    return jsonify(version=policy.active().version)
