"""Staff identity: passwords (scrypt), lockout with back-off, sessions (bearer or cookie + CSRF), TOTP, audit.

Public interface: login, logout, refresh, me, change_password, set_password, admin_reset, deactivate,
totp_setup, totp_confirm, register, seed_demo. Permissions per role come from the ``access`` policy
(``app.platform.auth.access_view``).
"""
import base64
import datetime as dt
import hashlib
import hmac
import secrets
import string
import struct

from werkzeug.security import check_password_hash, generate_password_hash

from app.db import for_update, transactional
from app.errors import Problem, not_found
from app.models.staff import Staff, StaffCredential, StaffSession
from app.platform import audit, auth, clock
from app.services.identity import access as identity_access
from app.platform.timefmt import iso

PASSWORD_METHOD = "scrypt"  # werkzeug: scrypt n=2**15, r=8, p=1 (memory-hard), salted
MAX_PASSWORD = 256
TOTP_STEP, TOTP_DIGITS, TOTP_WINDOW = 30, 6, 1
# verifying against this when the staff member is unknown keeps the answer time the same
_DUMMY_HASH = None


def _now():
    return clock.now()


def _hash_secret(secret):
    return hashlib.sha256(secret.encode()).hexdigest()


# --- passwords ------------------------------------------------------------------------------------

def password_problems(password, staff_no=None):
    """What is wrong with a new password under the access policy (empty list: acceptable)."""
    rules = auth.access_view().passwords
    out = []
    if len(password) < rules["min_length"]:
        out.append(f"at least {rules['min_length']} characters")
    if len(password) > MAX_PASSWORD:
        out.append(f"at most {MAX_PASSWORD} characters")
    classes = sum([any(c.islower() for c in password), any(c.isupper() for c in password),
                   any(c.isdigit() for c in password), any(not c.isalnum() for c in password)])
    if classes < rules["min_classes"]:
        out.append(f"characters of at least {rules['min_classes']} kinds (lower case, upper case, digits, other)")
    if staff_no and staff_no.lower() in password.lower():
        out.append("must not contain the staff number")
    if password and len(set(password)) < 4:
        out.append("at least 4 different characters")
    return out


def _check_password_rules(password, staff_no):
    problems = password_problems(password, staff_no)
    if problems:
        raise Problem(422, "weak-password", "Password too weak", "; ".join(problems), rules=problems)


def generate_password():
    """A random password that satisfies any access policy (16 characters of four kinds)."""
    alphabet = string.ascii_letters + string.digits
    while True:
        body = "".join(secrets.choice(alphabet) for _ in range(14))
        pw = body[:7] + "-" + secrets.choice(string.digits) + body[7:]
        if any(c.islower() for c in pw) and any(c.isupper() for c in pw):
            return pw


def _staff(staff_no):
    s = Staff.get_or_none(Staff.staff_no == staff_no)
    if s is None:
        raise not_found("staff", staff_no)
    return s


def _revoke_sessions(staff_no, reason, keep=None):
    q = StaffSession.update(revoked_at=_now(), revoked_reason=reason).where(
        (StaffSession.staff_no == staff_no) & StaffSession.revoked_at.is_null())
    if keep:
        q = q.where(StaffSession.token_id != keep)
    return q.execute()


@transactional()
def set_password(actor, staff_no, password=None, must_change=False, reason="staff.password_set"):
    """Set a staff member's password (rules of the access policy) and end their sessions.

    Args:
        actor: who does it (audit).
        staff_no: the staff member.
        password: the new password; None generates one (returned once).
        must_change: the staff member must change it at the next sign-in (an admin reset).

    Returns:
        {"staff_no", "password" (only when generated), "sessions_ended"}.
    """
    _staff(staff_no)
    generated = password is None
    if generated:
        password = generate_password()
    _check_password_rules(password, staff_no)
    now = _now()
    values = {"password_hash": generate_password_hash(password, method=PASSWORD_METHOD),
              "password_changed_at": now, "must_change": must_change, "failed_count": 0, "lockouts": 0,
              "locked_until": None, "updated_at": now}
    if StaffCredential.get_or_none(StaffCredential.staff_no == staff_no) is None:
        StaffCredential.create(staff_no=staff_no, **values)
    else:
        StaffCredential.update(**values).where(StaffCredential.staff_no == staff_no).execute()
    ended = _revoke_sessions(staff_no, "password-reset")
    audit.record(actor, reason, f"staff:{staff_no}", after={"must_change": must_change, "sessions_ended": ended},
                 staff_no=staff_no)
    out = {"staff_no": staff_no, "must_change": must_change, "sessions_ended": ended}
    if generated:
        out["password"] = password
    return out


def admin_reset(actor, staff_no, password=None, totp_too=False):
    """An administrator's reset: new (or generated) password, change required at next sign-in, lock lifted."""
    out = set_password(actor, staff_no, password, must_change=True, reason="staff.password_reset")
    if totp_too:
        reset_totp(actor, staff_no)
    return out


@transactional()
def reset_totp(actor, staff_no):
    """Remove a staff member's TOTP second factor (a lost device); they enrol again."""
    StaffCredential.update(totp_secret=None, totp_enabled=False, totp_last_step=None).where(
        StaffCredential.staff_no == staff_no).execute()
    audit.record(actor, "staff.totp_reset", f"staff:{staff_no}", staff_no=staff_no)


@transactional()
def deactivate(actor, staff_no):
    """Deactivate a staff member and end every session at once (all processes check per request)."""
    s = _staff(staff_no)
    was = s.active
    Staff.update(active=False).where(Staff.staff_no == staff_no).execute()
    ended = _revoke_sessions(staff_no, "deactivated")
    audit.record(actor, "staff.deactivate", f"staff:{staff_no}", before={"active": was},
                 after={"active": False, "sessions_ended": ended}, staff_no=staff_no)
    return {"staff_no": staff_no, "active": False, "sessions_ended": ended}


# --- TOTP (RFC 6238 over RFC 4226 HOTP, SHA-1, 30 s, 6 digits) ---------------------------------------

def hotp(secret_b32, counter, digits=TOTP_DIGITS):
    key = base64.b32decode(secret_b32 + "=" * (-len(secret_b32) % 8), casefold=True)
    mac = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    code = (struct.unpack(">I", mac[offset:offset + 4])[0] & 0x7FFFFFFF) % 10 ** digits
    return str(code).zfill(digits)


def totp_step(at=None):
    at = at or _now()
    return int(at.replace(tzinfo=dt.timezone.utc).timestamp()) // TOTP_STEP


def totp(secret_b32, at=None):
    """The TOTP code of ``secret_b32`` at ``at`` (default: the clock's now)."""
    return hotp(secret_b32, totp_step(at))


def _totp_match(cred, code):
    """The time step ``code`` matches (within one step either side, never an already used step), or None."""
    if not code or not cred.totp_secret or not code.isdigit() or len(code) != TOTP_DIGITS:
        return None
    now = totp_step()
    for step in range(now - TOTP_WINDOW, now + TOTP_WINDOW + 1):
        if cred.totp_last_step is not None and step <= cred.totp_last_step:
            continue
        if hmac.compare_digest(hotp(cred.totp_secret, step), code):
            return step
    return None


@transactional()
def totp_setup(principal):
    """Start TOTP enrolment: a new secret (shown once) and an otpauth:// URI for authenticator apps."""
    staff_no = principal["staff_no"]
    cred = StaffCredential.get(StaffCredential.staff_no == staff_no)
    if cred.totp_enabled:
        raise Problem(409, "totp-enabled", "TOTP already enabled",
                      "TOTP is enabled; an administrator can reset it (patron staff passwd --reset-totp).")
    secret = base64.b32encode(secrets.token_bytes(20)).decode().rstrip("=")
    StaffCredential.update(totp_secret=secret, totp_enabled=False, totp_last_step=None, updated_at=_now()).where(
        StaffCredential.staff_no == staff_no).execute()
    audit.record(auth.actor(principal), "auth.totp_setup", f"staff:{staff_no}")
    return {"secret": secret, "otpauth_uri": f"otpauth://totp/Patron:{staff_no}?secret={secret}&issuer=Patron"
                                             f"&algorithm=SHA1&digits={TOTP_DIGITS}&period={TOTP_STEP}"}


@transactional()
def totp_confirm(principal, code):
    """Enable TOTP with a first valid code; the current session counts as signed in with it."""
    staff_no = principal["staff_no"]
    cred = StaffCredential.get(StaffCredential.staff_no == staff_no)
    if cred.totp_enabled or not cred.totp_secret:
        raise Problem(409, "totp-not-pending", "No TOTP enrolment pending", "Call POST /v1/auth/totp/setup first.")
    step = _totp_match(cred, code)
    if step is None:
        raise Problem(422, "invalid-totp", "Invalid code", "The code does not match; check the device's clock.")
    StaffCredential.update(totp_enabled=True, totp_last_step=step, updated_at=_now()).where(
        StaffCredential.staff_no == staff_no).execute()
    StaffSession.update(mfa=True).where(StaffSession.token_id == principal["session"]).execute()
    audit.record(auth.actor(principal), "auth.totp_enabled", f"staff:{staff_no}", after={"totp": True})
    return {"totp": True}


# --- sign-in and sessions --------------------------------------------------------------------------

def _new_session(staff_no, transport, mfa):
    token_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(24) if transport == "cookie" else None
    now = _now()
    expires = now + dt.timedelta(minutes=auth.access_view().sessions["ttl_minutes"])
    StaffSession.create(token_id=token_id, secret_hash=_hash_secret(secret),
                        csrf_hash=_hash_secret(csrf) if csrf else None, staff_no=staff_no, transport=transport,
                        mfa=mfa, created_at=now, expires_at=expires)
    return {"token": f"pts_{token_id}_{secret}", "token_id": token_id, "csrf_token": csrf, "expires_at": expires}


def _invalid():
    return Problem(401, "invalid-credentials", "Invalid credentials", "Unknown staff number or wrong password.")


@transactional()
def _record_failure(staff_no, reason, cred_exists):
    """Count a failed sign-in (locking after too many) and audit it; commits even though sign-in fails."""
    locked_until = None
    if cred_exists:
        lock = auth.access_view().lockout
        # locked: concurrent failures must each count (guessing in parallel gains nothing)
        cred = for_update(StaffCredential.select().where(StaffCredential.staff_no == staff_no)).get()
        failed, lockouts = cred.failed_count + 1, cred.lockouts
        if failed >= lock["after_failures"]:
            seconds = min(lock["max_seconds"], lock["base_seconds"] * 2 ** min(lockouts, 30))
            locked_until = _now() + dt.timedelta(seconds=seconds)
            failed, lockouts = 0, lockouts + 1
        StaffCredential.update(failed_count=failed, lockouts=lockouts,
                               locked_until=locked_until or cred.locked_until, updated_at=_now()).where(
            StaffCredential.staff_no == staff_no).execute()
    audit.record("anonymous", "auth.login_failed", f"staff:{staff_no}"[:200], reason=reason,
                 locked_until=iso(locked_until))
    return locked_until


def _locked(until):
    seconds = max(1, int((until - _now()).total_seconds()) + 1)
    return Problem(423, "account-locked", "Account locked",
                   f"Too many failed sign-ins; try again in {seconds} s or ask an administrator to reset the password.",
                   retry_after_seconds=seconds, locked_until=iso(until))


def login(body, user_agent=None):
    """Sign in with staff number and password (and a TOTP code when enrolled).

    Args:
        body: {staff_no, password, totp?, cookie?}.

    Returns:
        {"token", "token_type", "expires_at", "csrf_token" (cookie), "staff": me()} — the caller sets cookies.

    Raises:
        Problem: 401 invalid-credentials / totp-required, 423 account-locked.
    """
    global _DUMMY_HASH
    staff_no, password = body["staff_no"], body["password"]
    staff = Staff.get_or_none(Staff.staff_no == staff_no)
    cred = StaffCredential.get_or_none(StaffCredential.staff_no == staff_no) if staff else None
    if cred is not None and cred.locked_until is not None and cred.locked_until > _now():
        _record_failure(staff_no, "locked", False)
        raise _locked(cred.locked_until)
    if cred is None:
        if _DUMMY_HASH is None:
            _DUMMY_HASH = generate_password_hash(secrets.token_hex(8), method=PASSWORD_METHOD)
        check_password_hash(_DUMMY_HASH, password)
        _record_failure(staff_no, "unknown-staff" if staff is None else "no-password", False)
        raise _invalid()
    if not check_password_hash(cred.password_hash, password):
        until = _record_failure(staff_no, "wrong-password", True)
        if until:
            raise _locked(until)
        raise _invalid()
    if not staff.active:
        _record_failure(staff_no, "deactivated", False)
        raise _invalid()
    step = None
    if cred.totp_enabled:
        if not body.get("totp"):
            raise Problem(401, "totp-required", "TOTP code required",
                          "This account signs in with a TOTP code: send 'totp'.")
        step = _totp_match(cred, body["totp"])
        if step is None:
            until = _record_failure(staff_no, "wrong-totp", True)
            if until:
                raise _locked(until)
            raise _invalid()
    return _login_ok(staff, step, "cookie" if body.get("cookie") else "bearer", user_agent)


@transactional()
def _login_ok(staff, step, transport, user_agent):
    values = {"failed_count": 0, "lockouts": 0, "locked_until": None, "updated_at": _now()}
    if step is not None:
        values["totp_last_step"] = step
    # a concurrent sign-in may have used the same TOTP step: only one wins the compare-and-set
    q = StaffCredential.update(**values).where(StaffCredential.staff_no == staff.staff_no)
    if step is not None:
        q = q.where(StaffCredential.totp_last_step.is_null() | (StaffCredential.totp_last_step < step))
    if q.execute() != 1:
        raise _invalid()
    session = _new_session(staff.staff_no, transport, step is not None)
    audit.record(f"staff:{staff.staff_no}", "auth.login", f"staff:{staff.staff_no}", staff_no=staff.staff_no,
                 credential=f"session:{session['token_id']}",
                 after={"transport": transport, "mfa": step is not None, "expires_at": iso(session["expires_at"])},
                 user_agent=(user_agent or "")[:200] or None)
    principal = auth._session_principal(session["token"], "bearer" if transport == "bearer" else "cookie",
                                        session["csrf_token"], "GET")
    return {"token": session["token"], "token_type": "Bearer", "expires_at": iso(session["expires_at"]),
            "csrf_token": session["csrf_token"], "transport": transport, "staff": me(principal)}


@transactional()
def logout(principal, everywhere=False):
    """End this session (or every session of the staff member)."""
    staff_no = principal["staff_no"]
    if everywhere:
        ended = _revoke_sessions(staff_no, "logout")
    else:
        ended = StaffSession.update(revoked_at=_now(), revoked_reason="logout").where(
            (StaffSession.token_id == principal["session"]) & StaffSession.revoked_at.is_null()).execute()
    audit.record(auth.actor(principal), "auth.logout", f"staff:{staff_no}", after={"sessions_ended": ended})
    return {"sessions_ended": ended}


@transactional()
def refresh(principal):
    """A new session token (same transport and second factor) replacing this one, with a fresh expiry."""
    old = StaffSession.get(StaffSession.token_id == principal["session"])
    StaffSession.update(revoked_at=_now(), revoked_reason="refreshed").where(StaffSession.id == old.id).execute()
    session = _new_session(old.staff_no, old.transport, old.mfa)
    audit.record(auth.actor(principal), "auth.refresh", f"staff:{old.staff_no}",
                 before={"session": old.token_id}, after={"session": session["token_id"],
                                                          "expires_at": iso(session["expires_at"])})
    return {"token": session["token"], "token_type": "Bearer", "expires_at": iso(session["expires_at"]),
            "csrf_token": session["csrf_token"], "transport": old.transport}


@transactional()
def change_password(principal, current, new):
    """Change one's own password (the current one is required); other sessions end, this one stays."""
    staff_no = principal["staff_no"]
    cred = StaffCredential.get(StaffCredential.staff_no == staff_no)
    if not check_password_hash(cred.password_hash, current):
        raise Problem(403, "wrong-password", "Wrong password", "The current password is wrong.")
    if current == new:
        raise Problem(422, "weak-password", "Password too weak", "the new password must differ from the current one",
                      rules=["must differ from the current password"])
    _check_password_rules(new, staff_no)
    now = _now()
    StaffCredential.update(password_hash=generate_password_hash(new, method=PASSWORD_METHOD),
                           password_changed_at=now, must_change=False, updated_at=now).where(
        StaffCredential.staff_no == staff_no).execute()
    ended = _revoke_sessions(staff_no, "password-changed", keep=principal["session"])
    audit.record(auth.actor(principal), "auth.password_changed", f"staff:{staff_no}",
                 after={"other_sessions_ended": ended})
    return {"changed": True, "other_sessions_ended": ended}


def me(principal):
    """Who is signed in: staff number, name, department, roles, permissions, scopes, session expiry."""
    cred = StaffCredential.get_or_none(StaffCredential.staff_no == principal["staff_no"])
    return {"staff_no": principal["staff_no"], "name": principal.get("name"),
            "department": principal.get("department"), "roles": list(principal.get("roles") or []),
            "permissions": sorted(principal.get("permissions") or []), "scopes": sorted(principal.get("scopes") or []),
            "session": {"id": principal.get("session"), "expires_at": iso(principal.get("expires_at")),
                        "mfa": principal.get("mfa", False)},
            "totp_enabled": bool(cred and cred.totp_enabled),
            "action_required": principal.get("restricted")}


# --- wiring --------------------------------------------------------------------------------------------

DEMO_ADMIN = ("S-admin", "陈管理员", "cs", ["admin"])


def seed_demo():
    """Demo credentials: an administrator, and a password for every demo staff member without one.

    Returns:
        [(staff_no, name, roles, password)] set now (empty when all had passwords already): printed once.
    """
    from app.services.tickets import staff as tickets_staff
    staff_no, name, dept, roles = DEMO_ADMIN
    if Staff.get_or_none(Staff.staff_no == staff_no) is None:
        tickets_staff.create_staff({"staff_no": staff_no, "name": name, "department": dept, "roles": roles})
    have = {c.staff_no for c in StaffCredential.select(StaffCredential.staff_no)}
    out = []
    for s in Staff.select().where(Staff.active == True).order_by(Staff.staff_no):  # noqa: E712
        if s.staff_no in have:
            continue
        result = set_password("system:demo", s.staff_no)
        out.append((s.staff_no, s.name, s.role_list, result["password"]))
    return out


def register():
    """The ``access`` policy kind (required), its cross-check, and the permissions this context declares."""
    from app.policy import kinds
    identity_access.declare()
    kinds.register("access", cross_check=identity_access.cross_check)
    kinds.require("access", "staff")


# --- staff administration (records and sessions; the staff table itself is shared with tickets) -------------

def _staff_summary(s):
    return {"department": s.department, "roles": s.role_list, "active": s.active}


@transactional()
def create_staff(actor, body):
    """Create a staff member (department and roles from the staff policy); audited."""
    from app.services.tickets import staff as tickets_staff
    out = tickets_staff.create_staff(body)
    audit.record(actor, "staff.create", f"staff:{out['staff_no']}", before=None,
                 after={"department": out["department"], "roles": out["roles"], "active": out["active"]})
    return out


@transactional()
def update_staff(actor, staff_no, body):
    """Change department, roles or the active flag; deactivating ends every session at once. Audited."""
    from app.services.tickets import staff as tickets_staff
    before = _staff_summary(_staff(staff_no))
    out = tickets_staff.update_staff(staff_no, body)
    ended = _revoke_sessions(staff_no, "deactivated") if not out["active"] else 0
    audit.record(actor, "staff.update", f"staff:{staff_no}", before=before,
                 after={"department": out["department"], "roles": out["roles"], "active": out["active"],
                        **({"sessions_ended": ended} if ended else {})}, staff_no=staff_no)
    return out
