"""API keys: created once (shown once), stored hashed, checked per request with scopes."""
import hashlib
import hmac
import secrets
import threading
import time

from app.errors import Problem
from app.models.core import ApiKey, utcnow

SCOPES = ("admin", "policy:read", "policy:write", "ledger:read", "ledger:write",
          "members:read", "members:write", "tickets:read", "tickets:write",
          "service:read", "service:write", "simulate:read", "simulate:write")

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
    n = ApiKey.update(revoked_at=utcnow()).where(ApiKey.key_id == key_id).execute()
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
