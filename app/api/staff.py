"""Staff and departments HTTP API (departments and roles come from the staff policy), passwords, deactivation."""
from flask import Blueprint, g, jsonify, request

from app.api import operation, page, page_args, page_query
from app.platform.auth import actor
from app.services import identity
from app.services.tickets import staff as tickets_staff

bp = Blueprint("staff", __name__, url_prefix="/v1")

TAGS = ["staff"]


@bp.get("/departments")
@operation("Departments and their queues (from the staff policy)", scope="tickets:read", tags=TAGS,
           response="api/staff/departments.json")
def departments():
    return jsonify(items=tickets_staff.departments())


@bp.post("/staff")
@operation("Create a staff member", scope="admin", body="api/tickets/staff.json", tags=TAGS, status=201,
           idempotent="replay", permission="staff.admin", allow_service=True,
           problems={409: "staff-exists", 422: "unknown-department, unknown-role, validation-failed"},
           response="api/staff/staff_member.json")
def create_staff():
    resp = jsonify(identity.create_staff(actor(g.principal), g.body))
    resp.status_code = 201
    return resp


@bp.get("/staff")
@operation("Staff members by staff_no", scope="tickets:read", tags=TAGS, response="api/tickets/staff_page.json",
           query={"department": "code", "role": "role code", **page_query("string")})
def list_staff():
    return page(*tickets_staff.list_staff(request.args.get("department"), request.args.get("role"), *page_args()))


@bp.get("/staff/<staff_no>")
@operation("One staff member", scope="tickets:read", tags=TAGS,
           response="api/staff/staff_member.json")
def get_staff(staff_no):
    return jsonify(tickets_staff.get_staff(staff_no))


@bp.patch("/staff/<staff_no>")
@operation("Change a staff member's department, roles or active flag (inactive: every session ends at once)",
           scope="admin", body="api/tickets/staff_update.json", tags=TAGS, permission="staff.admin",
           allow_service=True, idempotent="replay",
           problems={422: "unknown-department, unknown-role, validation-failed"},
           response="api/staff/staff_member.json")
def update_staff(staff_no):
    return jsonify(identity.update_staff(actor(g.principal), staff_no, g.body))


@bp.post("/staff/<staff_no>/password")
@operation("Reset a staff member's password (given, or generated and returned once); the change is required "
           "at the next sign-in, the lock is lifted and every session ends", scope="admin",
           body="api/auth/password_reset.json", tags=TAGS, permission="staff.admin", allow_service=True, idempotent="replay",
           response="api/staff/password_reset_result.json")
def reset_password(staff_no):
    return jsonify(identity.admin_reset(actor(g.principal), staff_no, g.body.get("password"),
                                        bool(g.body.get("reset_totp"))))


@bp.post("/staff/<staff_no>/deactivate")
@operation("Deactivate a staff member: every session ends at once, in every process", scope="admin", tags=TAGS,
           permission="staff.admin", allow_service=True, idempotent="replay",
           response="api/staff/deactivated.json")
def deactivate(staff_no):
    return jsonify(identity.deactivate(actor(g.principal), staff_no))
