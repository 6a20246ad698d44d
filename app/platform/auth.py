"""Who is calling: API keys (services, with scopes) and staff sessions (people, with permissions from policy).

Every request is checked against the database (no in-process cache), so a revoked key, an ended session or a
deactivated staff member is refused at once by every process.
"""
import hashlib
import hmac
import secrets

from app.platform import clock, sql
from app.errors import Problem
from app.models.core import ApiKey

SCOPES = ("admin", "policy:read", "policy:write", "ledger:read", "ledger:write",
          "members:read", "members:write", "tickets:read", "tickets:write",
          "service:read", "service:write", "simulate:read", "simulate:write", "act-as")

# A service key with the ``act-as`` scope names the staff member it acts for in this header.
ACT_AS_HEADER = "Patron-Act-As"
# Cookie sessions (the web workspace): the session cookie is HttpOnly; unsafe methods must echo the CSRF
# cookie's value in this header (double submit, bound to the session by its stored hash).
SESSION_COOKIE = "patron_session"
CSRF_COOKIE = "patron_csrf"
CSRF_HEADER = "X-CSRF-Token"
# ... or, from a plain HTML form of the web workspace (no JavaScript), in this form field
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# --- permissions: a static registry every context contributes to from its register() --------------

_permissions = {}  # name -> description


def declare_permissions(mapping):
    """Declare staff permissions (name -> description) that routes or services check.

    The ``access`` policy may only grant declared names, so a typo in a policy file is refused instead of
    silently granting nothing. Idempotent.
    """
    _permissions.update(mapping)


def known_permissions():
    """name -> description of every declared permission."""
    return dict(_permissions)


def _hash(secret):
    return hashlib.sha256(secret.encode()).hexdigest()


# --- API keys -------------------------------------------------------------------------------------

def create_key(name, scopes):
    """Create an API key.

    Args:
        name: who or what uses it.
        scopes: iterable of scope names from SCOPES.

    Returns:
        (token, ApiKey): the token is shown once and never stored.
    """
    scopes = sorted(set(scopes))
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        raise Problem(422, "unknown-scope", "Unknown scope",
                      f"unknown scope(s) {unknown}; choose from {', '.join(SCOPES)}")
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(24)
    key = ApiKey.create(key_id=key_id, name=name, secret_hash=_hash(secret), scopes=" ".join(scopes))
    return f"ptr_{key_id}_{secret}", key


def revoke_key(key_id):
    """Revoke a key; every process refuses it from its next request (keys are read per request)."""
    return ApiKey.update(revoked_at=clock.now()).where(
        (ApiKey.key_id == key_id) & ApiKey.revoked_at.is_null()).execute()


def _unauthorized(detail, code="unauthorized"):
    return Problem(401, code, "Unauthorized", detail)


def _split(token, prefix):
    parts = token.strip().split("_", 2)
    if len(parts) != 3 or parts[0] != prefix or not parts[1] or not parts[2] or len(parts[1]) > 32:
        raise _unauthorized("Malformed token.")
    return parts[1], parts[2]


def _key_principal(token):
    key_id, secret = _split(token, "ptr")
    # a cached statement: on every request, peewee's query building cost more than the round trip
    row = sql.select_one(ApiKey, ("name", "secret_hash", "scopes", "revoked_at"), {"key_id": key_id})
    if row is None or row[3] is not None or not hmac.compare_digest(row[1], _hash(secret)):
        raise _unauthorized("Unknown or revoked API key.")
    return {"kind": "api_key", "id": key_id, "name": row[0], "scopes": frozenset(row[2].split())}


# --- staff sessions --------------------------------------------------------------------------------

def _session_principal(token, transport, csrf=None, method="GET"):
    from app.models.staff import Staff, StaffCredential, StaffSession
    token_id, secret = _split(token, "pts")
    row = (StaffSession.select(StaffSession, Staff, StaffCredential)
           .join(Staff, on=(Staff.staff_no == StaffSession.staff_no))
           .switch(StaffSession)
           .join(StaffCredential, on=(StaffCredential.staff_no == StaffSession.staff_no))
           .where(StaffSession.token_id == token_id).first())
    if row is None or not hmac.compare_digest(row.secret_hash, _hash(secret)):
        raise _unauthorized("Unknown session.")
    if row.revoked_at is not None:
        raise _unauthorized("This session has ended; sign in again.", "session-ended")
    if row.expires_at <= clock.now():
        raise _unauthorized("This session has expired; sign in again (or refresh before it expires).",
                            "session-expired")
    staff, cred = row.staff, row.staffcredential
    if not staff.active:
        raise _unauthorized("This staff member is deactivated.", "session-ended")
    if transport == "cookie":
        if row.transport != "cookie":
            raise _unauthorized("This token is not a cookie session.")
        if method not in SAFE_METHODS and not (
                csrf and row.csrf_hash and hmac.compare_digest(row.csrf_hash, _hash(csrf))):
            raise Problem(403, "csrf-failed", "CSRF check failed",
                          f"Cookie-authenticated {method} requests must send the {CSRF_HEADER} header "
                          f"with the value of the {CSRF_COOKIE} cookie.")
    access = access_view()
    roles = staff.role_list
    needs_totp = bool(set(roles) & access.totp_roles) and not row.mfa
    return {"kind": "staff", "id": f"staff:{staff.staff_no}", "name": staff.name, "staff_no": staff.staff_no,
            "department": staff.department, "roles": roles, "session": row.token_id,
            "scopes": access.scopes_for(roles), "permissions": access.permissions_for(roles),
            "restricted": ("password-change-required" if cred.must_change
                           else "totp-enrolment-required" if needs_totp else None),
            "mfa": bool(row.mfa), "expires_at": row.expires_at}


def authenticate(header, request=None):
    """The principal behind a request: ``Authorization: Bearer ptr_...`` (API key) or ``pts_...``
    (staff session), or the session cookie (``request`` given; unsafe methods then need the CSRF header).

    Raises:
        Problem: 401 for a missing, malformed, unknown, revoked or expired credential; 403 csrf-failed.
    """
    if not header and request is not None and request.cookies.get(SESSION_COOKIE):
        csrf = request.headers.get(CSRF_HEADER)
        if csrf is None and request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
            csrf = request.form.get(CSRF_FIELD)
        return _session_principal(request.cookies[SESSION_COOKIE], "cookie", csrf, request.method)
    if not header:
        raise _unauthorized("Send Authorization: Bearer <api key or session token>.")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer":
        raise _unauthorized("Expected a Bearer API key (ptr_...) or session token (pts_...).")
    if token.startswith("ptr_"):
        return _key_principal(token)
    if token.startswith("pts_"):
        return _session_principal(token, "bearer")
    raise _unauthorized("Expected a Bearer API key (ptr_...) or session token (pts_...).")


def has_scope(principal, scope):
    scopes = principal["scopes"]
    if "admin" in scopes or scope in scopes:
        return True
    area, _, level = scope.partition(":")
    return level == "read" and f"{area}:write" in scopes


def require_scope(principal, scope):
    if not has_scope(principal, scope):
        who = "This API key" if principal.get("kind") == "api_key" else "This session"
        raise Problem(403, "forbidden", "Forbidden", f"{who} lacks the scope {scope!r}.", required_scope=scope)


def _wanted(permission):
    return (permission,) if isinstance(permission, str) else tuple(permission)


def has_permission(principal, permission):
    """True when the acting person holds ``permission`` (or any of a tuple of them)."""
    held = principal.get("permissions") or frozenset()
    return any(p in held for p in _wanted(permission))


def require_permission(principal, permission):
    """403 ``forbidden`` naming ``required_permission`` unless the acting person holds it."""
    if not has_permission(principal, permission):
        wanted = _wanted(permission)
        raise Problem(403, "forbidden", "Forbidden",
                      f"{principal.get('staff_no')} (roles {', '.join(principal.get('roles') or []) or 'none'}) "
                      f"lacks the permission {' or '.join(wanted)}.",
                      required_permission=wanted[0] if len(wanted) == 1 else list(wanted))


def actor(principal):
    """A stable text naming who acts, for journals and audit rows.

    ``api_key:<id>``, ``staff:<staff_no>`` (a session), or ``api_key:<id> as staff:<staff_no>`` (act-as).
    """
    if not principal:
        return "system"
    if principal.get("kind") == "staff":
        return f"staff:{principal['staff_no']}"
    if principal.get("staff_no"):
        return f"{principal['kind']}:{principal['id']} as staff:{principal['staff_no']}"
    return f"{principal['kind']}:{principal['id']}"


def credential(principal):
    """The credential that proved the identity: ``session:<token id>`` or ``api_key:<id>``."""
    if not principal:
        return None
    if principal.get("kind") == "staff":
        return f"session:{principal['session']}"
    return f"{principal['kind']}:{principal['id']}"


def _act_as(principal, headers):
    """The principal acting for the staff member named in the act-as header (a copy), or None."""
    staff_no = headers.get(ACT_AS_HEADER)
    if not staff_no:
        return None
    if "act-as" not in principal["scopes"]:
        raise Problem(403, "forbidden", "Forbidden", "Acting for a staff member needs the 'act-as' scope.",
                      required_scope="act-as")
    from app.models.staff import Staff
    staff = Staff.get_or_none(Staff.staff_no == staff_no)
    if staff is None or not staff.active:
        raise Problem(422, "unknown-staff", "Unknown staff member",
                      f"{ACT_AS_HEADER}: no active staff member {staff_no!r}.")
    roles = staff.role_list
    access = access_view()
    return dict(principal, staff_no=staff.staff_no, department=staff.department, roles=roles,
                permissions=access.permissions_for(roles))


def staff_of(principal, headers):
    """The staff member (``staff_no``) acting in a request, or None.

    A staff session names its own staff member; a service key needs the ``act-as`` scope and names the
    staff member in the ``Patron-Act-As`` header (both identities are recorded by ``actor``).

    Raises:
        Problem: 403 when the header is sent by a key without ``act-as``; 422 for an unknown or inactive staff no.
    """
    if principal.get("kind") == "staff" or principal.get("staff_no"):
        return principal["staff_no"]
    acting = _act_as(principal, headers)
    return acting["staff_no"] if acting else None


def _staff_required(permission):
    return Problem(403, "staff-required", "Staff identity required",
                   f"This action is taken by a person: sign in, or send {ACT_AS_HEADER} with an act-as key.",
                   required_permission=_wanted(permission)[0])


def require_staff(principal, headers, permission):
    """The acting staff member, who must hold ``permission`` (a name from the ``access`` policy).

    Raises:
        Problem: 403 ``staff-required`` without a staff identity, 403 ``forbidden`` without the permission.
    """
    if principal.get("kind") != "staff" and not principal.get("staff_no"):
        principal = _act_as(principal, headers)
        if principal is None:
            raise _staff_required(permission)
    require_permission(principal, permission)
    return principal["staff_no"]


def resolve(principal, headers, scope=None, permission=None, allow_service=False, self_service=False):
    """Authorise a request for a route; returns the principal that acts (act-as applied).

    A staff session needs the route's ``permission`` if it has one, else the route's ``scope`` (sessions get
    scopes per role from the ``access`` policy). A key needs the ``scope``; on a ``permission`` route it must
    act as a staff member who holds it, unless ``allow_service`` lets a service act as itself (the service
    layer then refuses steps only a person may take).
    """
    if principal["kind"] == "staff":
        if principal.get("restricted") and not self_service:
            raise Problem(403, principal["restricted"], "Action required before anything else",
                          "Change your password first (POST /v1/auth/password)."
                          if principal["restricted"] == "password-change-required" else
                          "Enrol a TOTP second factor first (POST /v1/auth/totp/setup, then /confirm), "
                          "and sign in with a code.")
        if permission:
            require_permission(principal, permission)
        elif scope:
            require_scope(principal, scope)
        return principal
    if scope:
        require_scope(principal, scope)
    acting = _act_as(principal, headers)
    if permission:
        if acting is None:
            if not allow_service:
                raise _staff_required(permission)
            return principal
        require_permission(acting, permission)
    return acting or principal


# --- the access policy: roles -> scopes and permissions ---------------------------------------------

class AccessView:
    """The compiled ``access`` policy of one policy version."""

    def __init__(self, doc):
        doc = doc or {}
        self.doc = doc
        defaults = doc.get("defaults") or {}
        self._roles = doc.get("roles") or {}
        self._default_scopes = frozenset(defaults.get("scopes") or ())
        self._default_perms = frozenset(defaults.get("permissions") or ())
        self.totp_roles = frozenset((doc.get("totp") or {}).get("required_for_roles") or ())
        self.sessions = dict({"ttl_minutes": 480}, **(doc.get("sessions") or {}))
        self.passwords = dict({"min_length": 10, "min_classes": 2}, **(doc.get("passwords") or {}))
        self.lockout = dict({"after_failures": 5, "base_seconds": 60, "max_seconds": 3600},
                            **(doc.get("lockout") or {}))
        self._cache = {}

    def _of(self, roles):
        key = tuple(sorted(roles))
        hit = self._cache.get(key)
        if hit is None:
            scopes, perms = set(self._default_scopes), set(self._default_perms)
            for role in key:
                spec = self._roles.get(role) or {}
                scopes.update(spec.get("scopes") or ())
                perms.update(spec.get("permissions") or ())
            hit = self._cache[key] = (frozenset(scopes), frozenset(perms))
        return hit

    def scopes_for(self, roles):
        return self._of(roles)[0]

    def permissions_for(self, roles):
        return self._of(roles)[1]

    def roles_with(self, permission):
        return sorted(r for r in self._roles if permission in self.permissions_for([r]))


def _build_access(ps):
    docs = ps.get("access") if "access" in ps.kinds() else []
    return AccessView(docs[0] if docs else None)


def access_view():
    """The AccessView of the active policy set (compiled once per version; no access policy = no grants)."""
    from app import policy
    return policy.derived("access", _build_access)
