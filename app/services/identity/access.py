"""The ``access`` policy kind: cross-checks against the staff policy and the permission registry."""
from app.platform import auth

# Permissions this context owns or checks on behalf of the platform.
PERMISSIONS = {
    "staff.admin": "create staff, change roles, reset passwords, deactivate",
    "audit.read": "read and export the audit log",
    "policy.apply": "activate a policy set",
}
# Permissions of the staff workspace (service desk, knowledge base, quality, rostering): their contexts check
# them on their routes; they are declared here so the access policy can grant them before and while those
# contexts land (declaring a name twice is harmless).
WORKSPACE_PERMISSIONS = {
    "service.serve": "customer service desk: go online, take users, message, close and transfer own sessions",
    "service.supervise": "customer service desk: see the floor, transfer or close any session",
    "knowledge.edit": "edit knowledge base articles",
    "knowledge.publish": "publish knowledge base articles",
    "qa.score": "score conversations and tickets for quality",
    "roster.edit": "edit shifts and rosters",
}


def declare():
    auth.declare_permissions(PERMISSIONS)
    auth.declare_permissions(WORKSPACE_PERMISSIONS)


def cross_check(ps):
    """Errors in the access policy: unknown roles (of the staff policy), permissions nobody declared, scopes."""
    errors = []
    docs = ps.get("access")
    if len(docs) > 1:
        errors.append(f"{docs[1]['_file']}: $: only one access policy may be in a set")
    if not docs:
        return errors
    doc = docs[0]
    af = doc["_file"]
    staff = (ps.get("staff") or [None])[0]
    roles = set((staff or {}).get("roles") or {}) if staff else None
    known = auth.known_permissions()
    scopes = set(auth.SCOPES) - {"admin", "act-as"}
    blocks = [("$.defaults", doc.get("defaults") or {})]
    blocks += [(f"$.roles.{name}", spec or {}) for name, spec in (doc.get("roles") or {}).items()]
    if staff is None:
        errors.append(f"{af}: $: the access policy needs a 'staff' policy in the same set")
    for path, spec in blocks:
        role = path.rsplit(".", 1)[1]
        if path != "$.defaults" and roles is not None and role not in roles:
            errors.append(f"{af}: {path}: unknown role {role!r} (roles of the staff policy: "
                          f"{', '.join(sorted(roles))})")
        for i, name in enumerate(spec.get("permissions") or []):
            if name not in known:
                errors.append(f"{af}: {path}.permissions[{i}]: unknown permission {name!r}: no route or service "
                              f"checks it (known: {', '.join(sorted(known))})")
        for i, name in enumerate(spec.get("scopes") or []):
            if name not in scopes:
                errors.append(f"{af}: {path}.scopes[{i}]: {name!r} is not a scope a session may hold "
                              f"({', '.join(sorted(scopes))})")
    for i, role in enumerate((doc.get("totp") or {}).get("required_for_roles") or []):
        if roles is not None and role not in roles:
            errors.append(f"{af}: $.totp.required_for_roles[{i}]: unknown role {role!r}")
    lock = doc.get("lockout") or {}
    if lock.get("base_seconds") and lock.get("max_seconds") and lock["base_seconds"] > lock["max_seconds"]:
        errors.append(f"{af}: $.lockout.base_seconds: larger than max_seconds")
    return errors
