"""Sign-in HTTP API: login (bearer token or cookie + CSRF), logout, refresh, me, password change, TOTP."""
from flask import Blueprint, current_app, g, jsonify, request

from app.api import operation
from app.platform import auth
from app.services import identity

bp = Blueprint("auth", __name__, url_prefix="/v1/auth")

TAGS = ["auth"]


def _session_required():
    from app.errors import Problem
    if g.principal.get("kind") != "staff":
        raise Problem(403, "session-required", "Session required",
                      "This call is about a signed-in staff session; API keys have none.")


def _set_cookies(resp, result):
    # browser-session cookies: the server-side expiry is what counts
    secure = bool(current_app.config.get("SESSION_COOKIE_SECURE")) or request.is_secure
    resp.set_cookie(auth.SESSION_COOKIE, result["token"], httponly=True, samesite="Strict", secure=secure, path="/")
    resp.set_cookie(auth.CSRF_COOKIE, result["csrf_token"], httponly=False, samesite="Strict", secure=secure,
                    path="/")


def _clear_cookies(resp):
    resp.delete_cookie(auth.SESSION_COOKIE, path="/")
    resp.delete_cookie(auth.CSRF_COOKIE, path="/")


@bp.post("/login")
@operation("Sign in with staff number and password (and TOTP code): a bearer token, or with cookie=true an "
           "HttpOnly SameSite=Strict session cookie plus a CSRF token", public=True, body="api/auth/login.json",
           tags=TAGS, idempotent="no-replay",
           problems={401: "invalid-credentials, totp-required", 423: "account-locked: too many failed attempts",
                     422: "invalid-totp, validation-failed"},
           response="api/auth/signed_in.json")
def login():
    result = identity.login(g.body, request.headers.get("User-Agent"))
    if result["transport"] == "cookie":
        body = {k: v for k, v in result.items() if k != "token"}
        resp = jsonify(body)
        _set_cookies(resp, result)
        return resp
    return jsonify({k: v for k, v in result.items() if k != "csrf_token"})


@bp.post("/logout")
@operation("End this session (?everywhere=true: every session of this staff member)", tags=TAGS,
           self_service=True, query={"everywhere": "true: end every session of this staff member"}, idempotent="replay",
           response="api/auth/signed_out.json")
def logout():
    _session_required()
    resp = jsonify(identity.logout(g.principal, everywhere=request.args.get("everywhere") == "true"))
    _clear_cookies(resp)
    return resp


@bp.post("/refresh")
@operation("A new session token with a fresh expiry, replacing this one", tags=TAGS, self_service=True,
           idempotent="no-replay",
           response="api/auth/session.json")
def refresh():
    _session_required()
    result = identity.refresh(g.principal)
    if result["transport"] == "cookie":
        resp = jsonify({k: v for k, v in result.items() if k != "token"})
        _set_cookies(resp, result)
        return resp
    return jsonify({k: v for k, v in result.items() if k != "csrf_token"})


@bp.get("/me")
@operation("Who is signed in: staff number, department, roles, permissions, scopes, session expiry", tags=TAGS,
           self_service=True,
           response="api/auth/me.json")
def me():
    _session_required()
    return jsonify(identity.me(g.principal))


@bp.post("/password")
@operation("Change one's own password (the current one required); other sessions end", tags=TAGS,
           body="api/auth/password.json", self_service=True, idempotent="replay",
           response="api/auth/password_changed.json")
def change_password():
    _session_required()
    return jsonify(identity.change_password(g.principal, g.body["current_password"], g.body["new_password"]))


@bp.post("/totp/setup")
@operation("Start TOTP enrolment: a secret (shown once) and an otpauth:// URI", tags=TAGS, self_service=True,
           idempotent="no-replay",
           response="api/auth/totp_setup_started.json")
def totp_setup():
    _session_required()
    return jsonify(identity.totp_setup(g.principal))


@bp.post("/totp/confirm")
@operation("Enable TOTP with a first code from the authenticator", tags=TAGS, body="api/auth/totp.json",
           self_service=True, idempotent="replay",
           response="api/auth/totp_enabled.json")
def totp_confirm():
    _session_required()
    return jsonify(identity.totp_confirm(g.principal, g.body["code"]))
