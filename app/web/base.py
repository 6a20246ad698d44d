"""The web workspace's thin layer: sign-in by the staff session cookie, CSRF, the same permissions as the API."""
import functools
import os
from urllib.parse import quote

from flask import Blueprint, current_app, g, make_response, redirect, render_template, request

from app.errors import Problem, validation_failed
from app.platform import auth, timefmt
from app.schemas import errors_of

HERE = os.path.dirname(os.path.abspath(__file__))
TEMPLATES = os.path.join(HERE, "templates")
STATIC = os.path.join(HERE, "static")
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})

# Problem codes in Chinese for the pages (the API keeps its English titles; the detail stays as the service said)
TITLES_ZH = {
    "unauthorized": "请先登录", "session-ended": "会话已结束，请重新登录", "session-expired": "会话已过期，请重新登录",
    "invalid-credentials": "工号或密码不正确", "totp-required": "请输入动态验证码", "account-locked": "账号已锁定",
    "forbidden": "没有权限", "csrf-failed": "页面已过期（CSRF 校验失败），请刷新后重试",
    "validation-failed": "输入有误", "not-found": "未找到", "queue-full": "排队人数已满",
    "outside-business-hours": "当前不在服务时间", "password-change-required": "请先修改密码",
    "totp-enrolment-required": "请先绑定动态验证码",
}


def blueprint(name, url_prefix, **kw):
    """A web blueprint: shared templates, HTML problem pages, nothing registered by import."""
    bp = Blueprint(name, __name__, url_prefix=url_prefix, template_folder=TEMPLATES, **kw)
    bp.register_error_handler(Problem, problem_page)
    return bp


def is_htmx():
    return request.headers.get("HX-Request") == "true"


def problem_page(exc):
    """A Problem as HTML: a full page, or for htmx a message swapped into the page's #flash area."""
    if exc.status == 401 and exc.code in ("unauthorized", "session-ended", "session-expired") \
            and request.blueprint != "web_chat":
        target = "/web/login?next=" + quote(request.full_path.rstrip("?") if request.method == "GET" else "/web/")
        if is_htmx():
            resp = make_response("", 401)
            resp.headers["HX-Redirect"] = target
            return resp
        if request.method == "GET":
            return redirect(target)
    title = TITLES_ZH.get(exc.code, exc.title)
    errors = exc.extra.get("errors") or []
    if is_htmx():
        resp = make_response(render_template("_flash.html", kind="error", title=title, detail=exc.detail,
                                             errors=errors, code=exc.code), exc.status)
        resp.headers["HX-Retarget"] = "#flash"
        resp.headers["HX-Reswap"] = "innerHTML"
        return resp
    return make_response(render_template("error.html", title=title, detail=exc.detail, errors=errors,
                                         code=exc.code, status=exc.status), exc.status)


def _principal():
    """The signed-in staff member (cookie session; CSRF checked on unsafe methods) or 401."""
    if not request.cookies.get(auth.SESSION_COOKIE):
        raise Problem(401, "unauthorized", "Unauthorized", "请先登录。")
    return auth.authenticate(None, request)


def page(permission=None, scope=None, self_service=False, audit=True):
    """A web page or action: the staff session must hold ``permission`` (else ``scope``), as the API route does.

    Unsafe methods need the CSRF token (header ``X-CSRF-Token``, which htmx sends, or the form field
    ``csrf_token``); a successful one is audited like an API request (``audit=False``: it changes nothing).
    """
    def deco(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            principal = _principal()
            g.principal = principal
            g.principal = auth.resolve(principal, request.headers, scope, permission, False, self_service)
            g.staff_no = g.principal.get("staff_no")
            result = view(*args, **kwargs)
            if audit and request.method in UNSAFE:
                from app.platform import audit as audit_log
                result = current_app.make_response(result)
                audit_log.from_response("web." + (request.endpoint or "").split(".", 1)[-1], kwargs, result)
            return result

        wrapper.web_page = {"permission": permission, "scope": scope}
        return wrapper
    return deco


def can(permission=None, scope=None):
    """Whether the signed-in person may open a page guarded by ``permission`` / ``scope`` (for menus)."""
    p = g.get("principal")
    if not p:
        return False
    if permission:
        return auth.has_permission(p, permission)
    return auth.has_scope(p, scope) if scope else True


def validated(schema_path, data):
    """``data`` checked against the same JSON Schema as the API body (422 listing every field otherwise)."""
    errors = errors_of(schema_path, data)
    if errors:
        raise validation_failed(errors)
    return data


def form_text(name, default=""):
    return (request.form.get(name) or default).strip()


def form_int(name, pointer=None):
    raw = (request.form.get(name) or "").strip()
    if not raw.isdigit() or len(raw) > 12:
        raise validation_failed([{"pointer": pointer or f"/{name}", "validator": "type", "message": "请输入整数"}])
    return int(raw)


def form_fields(*names, ints=(), required=()):
    """The non-empty fields ``names`` (text) and ``ints`` (integers) of the posted form, as an API body;
    ``required`` ones are present even when empty (the schema then says what is wrong)."""
    out = {}
    for name in names:
        if form_text(name) or name in required:
            out[name] = form_text(name)
    for name in ints:
        if form_text(name):
            out[name] = form_int(name)
    return out


def render(template, status=200, **ctx):
    return make_response(render_template(template, **ctx), status)


# --- template helpers (registered on the app by init_app) -------------------------------------------

def _local(value, fmt="%Y-%m-%d %H:%M:%S"):
    return timefmt.local_text(value, current_app.config.get("TIMEZONE") or "Asia/Shanghai", fmt)


def _yuan(fen):
    if fen is None:
        return ""
    sign = "-" if fen < 0 else ""
    fen = abs(int(fen))
    return f"{sign}¥{fen // 100:,}.{fen % 100:02d}"


def _duration(seconds):
    if seconds is None:
        return ""
    seconds = int(seconds)
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    if seconds < 60:
        return f"{sign}{seconds} 秒"
    if seconds < 3600:
        return f"{sign}{seconds // 60} 分 {seconds % 60} 秒"
    return f"{sign}{seconds // 3600} 小时 {seconds % 3600 // 60} 分"


# the shop's order statuses, for people (the API keeps the codes)
ORDER_STATUS_ZH = {"paid": "已付款", "unshipped": "待发货", "shipped": "已发货", "delivered": "已签收",
                   "completed": "已完成", "cancelled": "已取消", "refunded": "已退款", "returning": "退货中"}


def _order_status(code):
    return ORDER_STATUS_ZH.get(code, code)


def _csrf():
    return request.cookies.get(auth.CSRF_COOKIE, "")


def init_app(app):
    """Template filters and globals of the web pages."""
    app.add_template_filter(_local, "local")
    app.add_template_filter(_yuan, "yuan")
    app.add_template_filter(_duration, "duration")
    app.add_template_filter(_order_status, "order_status")
    app.add_template_global(_csrf, "csrf_token")
    app.add_template_global(can, "can")
