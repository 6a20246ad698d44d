"""Web workspace: sign-in and sign-out with the staff session cookie, and the start page."""
import secrets

from flask import current_app, g, redirect, request

from app.errors import Problem
from app.platform import auth
from app.services import identity
from app.web.base import STATIC, blueprint, form_text, page, render, validated

bp = blueprint("web", "/web", static_folder=STATIC, static_url_path="/static")

LOGIN_CSRF_COOKIE = "patron_login_csrf"  # double submit on the sign-in form (no session exists yet)


def _secure():
    return bool(current_app.config.get("SESSION_COOKIE_SECURE")) or request.is_secure


def _safe_next(target):
    return target if target and target.startswith("/web/") and not target.startswith("//") else "/web/"


@bp.get("/login")
def login_form():
    token = secrets.token_urlsafe(16)
    resp = render("login.html", login_csrf=token, next=_safe_next(request.args.get("next")))
    resp.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="Lax", secure=_secure(), path="/web/login")
    return resp


@bp.post("/login")
def login():
    nxt = _safe_next(request.form.get("next"))
    sent, expected = request.form.get("login_csrf") or "", request.cookies.get(LOGIN_CSRF_COOKIE) or ""
    if not sent or not secrets.compare_digest(sent, expected):
        raise Problem(403, "csrf-failed", "CSRF check failed", "登录页面已过期，请刷新后重新登录。")
    body = {"staff_no": form_text("staff_no"), "password": request.form.get("password") or "", "cookie": True}
    if form_text("totp"):
        body["totp"] = form_text("totp")
    try:
        validated("api/auth/login.json", body)
        result = identity.login(body, request.headers.get("User-Agent"))
    except Problem as exc:
        token = secrets.token_urlsafe(16)
        resp = render("login.html", status=exc.status, login_csrf=token, next=nxt, staff_no=body["staff_no"],
                      error=exc, need_totp=exc.code == "totp-required")
        resp.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="Lax", secure=_secure(),
                        path="/web/login")
        return resp
    resp = redirect(nxt, 303)
    # Lax: a link into the workspace from elsewhere keeps the session; unsafe requests still need the CSRF token
    resp.set_cookie(auth.SESSION_COOKIE, result["token"], httponly=True, samesite="Lax", secure=_secure(), path="/")
    resp.set_cookie(auth.CSRF_COOKIE, result["csrf_token"], httponly=False, samesite="Lax", secure=_secure(),
                    path="/")
    resp.delete_cookie(LOGIN_CSRF_COOKIE, path="/web/login")
    return resp


@bp.post("/logout")
@page(self_service=True)
def logout():
    identity.logout(g.principal)
    resp = redirect("/web/login", 303)
    resp.delete_cookie(auth.SESSION_COOKIE, path="/")
    resp.delete_cookie(auth.CSRF_COOKIE, path="/")
    return resp


@bp.get("/")
@page(self_service=True)
def home():
    return render("home.html", me=identity.me(g.principal))
