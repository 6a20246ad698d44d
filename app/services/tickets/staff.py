"""Staff and departments (minimal, shared with customer service): departments mirror the staff policy."""
from app.platform import clock, paging
from app.platform.timefmt import iso
from app.db import transactional
from app.errors import Problem, not_found

from app.models.staff import Department, Staff
from app.services.tickets import policy as tickets_policy


def _roles_text(roles):
    return " " + " ".join(sorted(set(roles))) + " "


def serialize(s):
    return {"staff_no": s.staff_no, "name": s.name, "department": s.department, "roles": s.role_list,
            "active": s.active, "created_at": iso(s.created_at)}


@transactional()
def sync_departments():
    """Mirror the staff policy's departments into the department table (idempotent); returns their codes."""
    cfg = tickets_policy.current()
    now = clock.now()
    codes = []
    for code, dept in cfg.departments().items():
        queues = " ".join(dept["queues"])
        row = Department.get_or_none(Department.code == code)
        if row is None:
            Department.create(code=code, name=dept["name"], queues=queues, active=True, updated_at=now)
        elif (row.name, row.queues, row.active) != (dept["name"], queues, True):
            Department.update(name=dept["name"], queues=queues, active=True, updated_at=now) \
                .where(Department.id == row.id).execute()
        codes.append(code)
    Department.update(active=False, updated_at=now).where(Department.code.not_in(codes) & Department.active).execute()
    return codes


def departments():
    """Departments and queues of the active staff policy."""
    cfg = tickets_policy.current()
    return [{"code": code, "name": d["name"], "queues": d["queues"]} for code, d in cfg.departments().items()]


def _check(cfg, department, roles):
    if department is not None and department not in cfg.departments():
        raise Problem(422, "unknown-department", "Unknown department", f"no department {department!r}",
                      allowed=sorted(cfg.departments()))
    unknown = sorted(set(roles or ()) - cfg.roles())
    if unknown:
        raise Problem(422, "unknown-role", "Unknown role", f"unknown role(s) {', '.join(unknown)}",
                      allowed=sorted(cfg.roles()))


@transactional()
def create_staff(body):
    """Create a staff member.

    Args:
        body: {staff_no, name, department, roles: [role codes]} — department and roles from the staff policy.

    Returns:
        the staff member as a dict.
    """
    cfg = tickets_policy.current()
    _check(cfg, body["department"], body["roles"])
    if Staff.select().where(Staff.staff_no == body["staff_no"]).exists():
        raise Problem(409, "staff-exists", "Staff member exists", f"{body['staff_no']!r} already exists")
    s = Staff.create(staff_no=body["staff_no"], name=body["name"], department=body["department"],
                     roles=_roles_text(body["roles"]), active=True)
    return serialize(s)


@transactional()
def update_staff(staff_no, body):
    """Change a staff member's department, roles or active flag."""
    cfg = tickets_policy.current()
    _check(cfg, body.get("department"), body.get("roles"))
    s = Staff.get_or_none(Staff.staff_no == staff_no)
    if s is None:
        raise not_found("staff", staff_no)
    if "department" in body:
        s.department = body["department"]
    if "roles" in body:
        s.roles = _roles_text(body["roles"])
    if "active" in body:
        s.active = body["active"]
    s.save()
    return serialize(s)


def list_staff(department=None, role=None, cursor=None, limit=50):
    """Staff members by staff_no (keyset on it), optionally of one department and holding one role.

    Returns:
        (items, next_cursor or None).
    """
    q = Staff.select()
    if department:
        q = q.where(Staff.department == department)
    if role:
        q = q.where(Staff.roles.contains(f" {role} "))
    rows, nxt = paging.keyset(q, Staff.staff_no, cursor, limit, desc=False)
    return [serialize(s) for s in rows], nxt


def get_staff(staff_no):
    s = Staff.get_or_none(Staff.staff_no == staff_no)
    if s is None:
        raise not_found("staff", staff_no)
    return serialize(s)
