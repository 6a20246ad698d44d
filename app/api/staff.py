"""Staff and departments HTTP API (minimal; departments and roles come from the staff policy)."""
from flask import Blueprint, g, jsonify, request

from app.api import operation
from app.services.tickets import staff as tickets_staff

bp = Blueprint("staff", __name__, url_prefix="/v1")

TAGS = ["staff"]


@bp.get("/departments")
@operation("Departments and their queues (from the staff policy)", scope="tickets:read", tags=TAGS)
def departments():
    return jsonify(items=tickets_staff.departments())


@bp.post("/staff")
@operation("Create a staff member", scope="admin", body="api/tickets/staff.json", tags=TAGS, status=201,
           idempotent="replay",
           problems={409: "staff-exists", 422: "unknown-department, unknown-role, validation-failed"})
def create_staff():
    resp = jsonify(tickets_staff.create_staff(g.body))
    resp.status_code = 201
    return resp


@bp.get("/staff")
@operation("Staff members", scope="tickets:read", tags=TAGS, query={"department": "code", "role": "role code"})
def list_staff():
    return jsonify(items=tickets_staff.list_staff(request.args.get("department"), request.args.get("role")))


@bp.get("/staff/<staff_no>")
@operation("One staff member", scope="tickets:read", tags=TAGS)
def get_staff(staff_no):
    return jsonify(tickets_staff.get_staff(staff_no))


@bp.patch("/staff/<staff_no>")
@operation("Change a staff member's department, roles or active flag", scope="admin",
           body="api/tickets/staff_update.json", tags=TAGS, idempotent="replay",
           problems={422: "unknown-department, unknown-role, validation-failed"})
def update_staff(staff_no):
    return jsonify(tickets_staff.update_staff(staff_no, g.body))
