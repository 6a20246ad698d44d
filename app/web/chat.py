"""The customer chat page a shop embeds: start a chat, queue position and wait, live messages, timeouts, CSAT.

The user's credential is the conversation's user token (as on the API's live stream): kept in an HttpOnly
cookie for the page itself and sent in the body of every action (so no ambient cookie authorises a change).
"""
from flask import current_app, make_response, redirect, request

from app.errors import Problem
from app.services.service import desk
from app.services.service.policy import current
from app.web.base import blueprint, form_fields, form_int, form_text, is_htmx, render, validated

bp = blueprint("web_chat", "/web/chat")

ON_TIMEOUT_ZH = {"requeue": "重新排队，并优先为您接待", "ticket": "自动为您创建工单，处理结果会通知您",
                 "close": "结束本次会话，您可以重新发起咨询"}


def _cookie(conv_id):
    return f"patron_chat_{conv_id}"


def _with_token(resp, conv_id, token):
    secure = bool(current_app.config.get("SESSION_COOKIE_SECURE")) or request.is_secure
    resp.set_cookie(_cookie(conv_id), token, httponly=True, samesite="Lax", secure=secure,
                    path=f"/web/chat/{conv_id}")
    return resp


def _conversation(conv_id, token):
    return desk.check_user_token(conv_id, token)


def timeout_notes(group):
    """What the user is told happens on a timeout, from the service policy of the group."""
    cfg = current()
    g = cfg.groups.get(group) or {}
    return {"user_timeout": cfg.seconds("user_timeout_seconds", 120),
            "on_user_timeout": ON_TIMEOUT_ZH.get(g.get("on_user_timeout"), g.get("on_user_timeout")),
            "on_agent_timeout": ON_TIMEOUT_ZH.get(g.get("on_agent_timeout"), g.get("on_agent_timeout")),
            "heartbeat": cfg.seconds("heartbeat_seconds", 10)}


@bp.get("")
def start_form():
    return render("chat_start.html", enabled=current_app.config.get("CHAT_DEMO_START"))


@bp.post("")
def start():
    if not current_app.config.get("CHAT_DEMO_START"):
        raise Problem(403, "forbidden", "Forbidden", "请从商城页面发起咨询（演示入口未开启）。")
    body = dict(form_fields("user_id", "topic", required=("user_id",)), channel="web")
    validated("api/service/request.json", body)
    try:
        _, out = desk.request_service(body)
    except Problem as exc:
        return render("chat_start.html", status=exc.status, enabled=True, error=exc, user_id=body["user_id"])
    conv_id = out["conversation"]["id"]
    return _with_token(redirect(f"/web/chat/{conv_id}", 303), conv_id, out["user_token"])


@bp.get("/<int:conv_id>/enter")
def enter(conv_id):
    """The shop sends the user here with the user token of a chat it started through the API."""
    token = request.args.get("token") or ""
    _conversation(conv_id, token)
    return _with_token(redirect(f"/web/chat/{conv_id}", 303), conv_id, token)


@bp.get("/<int:conv_id>")
def chat_page(conv_id):
    token = request.cookies.get(_cookie(conv_id)) or ""
    _conversation(conv_id, token)
    conv = desk.view(conv_id)
    return render("chat.html", conv=conv, token=token, events=desk.events_after(conv_id, 0),
                  notes=timeout_notes(conv["group"]), tz=current_app.config.get("TIMEZONE"))


@bp.post("/<int:conv_id>/status")
def status(conv_id):
    _conversation(conv_id, form_text("token"))
    conv = desk.view(conv_id)
    return render("_chat_status.html", conv=conv, notes=timeout_notes(conv["group"]), token=form_text("token"))


@bp.post("/<int:conv_id>/messages")
def send(conv_id):
    c = _conversation(conv_id, form_text("token"))
    body = validated("api/service/user_message.json",
                     {"user_id": c.user_id, "message": {"type": "text", "text": form_text("text")}})
    desk.user_message(conv_id, body)
    return make_response("", 204)  # the message comes back on the live stream, like everyone else's


@bp.post("/<int:conv_id>/heartbeat")
def heartbeat(conv_id):
    c = _conversation(conv_id, form_text("token"))
    desk.user_heartbeat(conv_id, c.user_id)
    return make_response("", 204)


@bp.post("/<int:conv_id>/leave")
def leave(conv_id):
    c = _conversation(conv_id, form_text("token"))
    desk.leave(conv_id, c.user_id)
    conv = desk.view(conv_id)
    return render("_chat_status.html", conv=conv, notes=timeout_notes(conv["group"]), token=form_text("token"))


@bp.post("/<int:conv_id>/csat")
def csat(conv_id):
    c = _conversation(conv_id, form_text("token"))
    body = dict(form_fields("comment"), user_id=c.user_id, score=form_int("score", "/score"))
    desk.csat(conv_id, validated("api/service/csat.json", body))
    conv = desk.view(conv_id)
    return render("_chat_status.html", conv=conv, notes=timeout_notes(conv["group"]), thanked=True,
                  token=form_text("token")) \
        if is_htmx() else redirect(f"/web/chat/{conv_id}", 303)
