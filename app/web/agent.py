"""The agent's page: presence, the current conversation live, the group's queue, the customer view, knowledge,
acting for the user, compensation within limits, tickets (with SLA clocks), transfer and close.

Every action calls the service function the API route calls, under the same permission; bodies are checked
against the same JSON Schemas.
"""
import secrets

from flask import current_app, g, make_response, request

from app.errors import Problem
from app.platform import idempotency
from app.services import tickets
from app.services.knowledge import entries
from app.services.service import actions, complaints, compensation, connectors, customer, desk, monitoring
from app.services.service.policy import current
from app.services.tickets import policy as tickets_policy
from app.web.base import blueprint, form_fields, form_text, page, render, validated

bp = blueprint("web_agent", "/web/agent")

SERVE = {"scope": "service:write", "permission": "service.serve"}
ACTION_PERMISSIONS = {"invoice": "order.invoice", "return": "order.return", "cancel": "order.cancel"}
ACTION_LABELS = {"invoice": "补开发票", "return": "退换货", "cancel": "取消订单"}
STATUS_ZH = {"online": "在线", "away": "小休", "offline": "离线"}


def _refresh(resp, *events):
    """Tell htmx which panels to reload after an action (HX-Trigger)."""
    resp.headers["HX-Trigger"] = ", ".join(events or ("agent-refresh",))
    return resp


def _current(me, conv_id=None):
    serving = me.get("serving") or []
    if conv_id:
        for c in serving:
            if c["id"] == conv_id:
                return c
    return serving[0] if serving else None


def _queue(me):
    """The waiting queue of the agent's skill groups (the floor's rows for those groups)."""
    cfg = current()
    mine = set(me.get("groups") or cfg.groups_for(g.principal.get("roles") or []))
    return [row for row in monitoring.floor()["groups"] if row["group"] in mine]


def _my_tickets():
    return tickets.list_tickets({"assignee": g.staff_no, "open": "true"}, limit=20)["items"]


def _context(conv_id=None):
    me = desk.agent_view(g.staff_no)
    conv = _current(me, conv_id)
    cfg = current()
    return {"me": me, "conv": conv, "queue": _queue(me), "my_tickets": _my_tickets(),
            "events": desk.events_after(conv["id"], 0, audience=("all", "user", "agent")) if conv else [],
            "categories": cfg.doc.get("close_categories") or [], "groups": cfg.groups,
            "ticket_categories": list(tickets_policy.current().tickets["categories"]),
            "status_zh": STATUS_ZH, "tz": current_app.config.get("TIMEZONE"), "new_key": secrets.token_hex(12)}


@bp.get("")
@page(**SERVE)
def agent_page():
    conv_id = request.args.get("conv", type=int)
    return render("agent.html", **_context(conv_id))


@bp.get("/panel")
@page(**SERVE)
def panel():
    return render("_agent_panel.html", **_context())


@bp.get("/conversation")
@page(**SERVE)
def conversation():
    return render("_agent_conversation.html", **_context(request.args.get("conv", type=int)))


# --- presence ---------------------------------------------------------------------------------------

@bp.post("/online")
@page(**SERVE)
def online():
    desk.go_online(g.staff_no, None)
    return _refresh(make_response("", 204))


@bp.post("/away")
@page(**SERVE)
def away():
    desk.go_away(g.staff_no)
    return _refresh(make_response("", 204))


@bp.post("/offline")
@page(**SERVE)
def offline():
    desk.go_offline(g.staff_no)
    return _refresh(make_response("", 204))


@bp.post("/heartbeat")
@page(**SERVE)
def heartbeat():
    desk.agent_heartbeat(g.staff_no)
    return make_response("", 204)


@bp.post("/take")
@page(**SERVE)
def take():
    desk.take(g.staff_no)
    return _refresh(make_response("", 204))


# --- the conversation -------------------------------------------------------------------------------

@bp.post("/conversations/<int:conv_id>/messages")
@page(**SERVE)
def send(conv_id):
    body = validated("api/service/agent_message.json", {"type": "text", "text": form_text("text")})
    desk.agent_message(g.staff_no, conv_id, body)
    entry = form_text("knowledge_entry")
    if entry.isdigit():  # sent from a knowledge entry: counted as a use, as POST /v1/knowledge/entries/<id>/use
        entries.use(int(entry), g.staff_no, conv_id)
    return make_response("", 204)  # the message comes back on the live stream


@bp.post("/conversations/<int:conv_id>/transfer")
@page(**SERVE)
def transfer(conv_id):
    body = form_fields("to_agent", "note") if form_text("to_agent") else form_fields("to_group", "note")
    desk.transfer(g.staff_no, conv_id, validated("api/service/transfer.json", body))
    return _refresh(make_response("", 204))


@bp.post("/conversations/<int:conv_id>/close")
@page(**SERVE)
def close(conv_id):
    body = form_fields("category", "summary", required=("category",))
    desk.close(g.staff_no, conv_id, validated("api/service/close.json", body))
    return _refresh(make_response("", 204))


@bp.post("/conversations/<int:conv_id>/ticket")
@page(**SERVE)
def open_ticket(conv_id):
    body = form_fields("category", "summary", ints=("ticket_id",), required=("category",))
    out = complaints.ticket_from_conversation(g.principal, g.staff_no, conv_id,
                                              validated("api/service/ticket.json", body))
    return _refresh(render("_flash.html", kind="ok", title="已创建工单",
                           detail=f"工单 #{out.get('ticket_id') or out.get('ticket', {}).get('id')}", code="ticket"),
                    "panel-refresh")


# --- customer view, orders, knowledge ---------------------------------------------------------------

@bp.get("/customers/<user_id>")
@page(**SERVE)
def customer_view(user_id):
    conv_id = request.args.get("conv", type=int)
    return render("_agent_customer.html", view=customer.view(user_id), conv_id=conv_id,
                  limits=_limits(), new_key=secrets.token_hex(12), labels=ACTION_LABELS)


def _limits():
    from app.platform import auth
    if not auth.has_permission(g.principal, "compensation.issue"):
        return None
    try:
        return compensation.limits(g.staff_no)
    except Problem:
        return None


@bp.get("/orders")
@page(scope="service:read")
def order_lookup():
    order_no = (request.args.get("order_no") or "").strip()
    if not order_no or len(order_no) > 200:
        raise Problem(422, "validation-failed", "Validation failed", "请输入订单号", errors=[
            {"pointer": "/query/order_no", "message": "请输入订单号", "validator": "required"}])
    order = connectors.lookup("get_order", order_no)
    return render("_agent_order.html", order=order, conv_id=request.args.get("conv", type=int),
                  new_key=secrets.token_hex(12), labels=ACTION_LABELS)


@bp.get("/knowledge")
@page(scope="service:read")
def knowledge_search():
    q = (request.args.get("q") or "").strip()[:200]
    items = entries.search(q, limit=8) if q else []
    return render("_agent_knowledge.html", items=items, query=q)


@bp.get("/knowledge/suggestions")
@page(**SERVE)
def knowledge_suggestions():
    conv_id = request.args.get("conv", type=int)
    out = entries.suggest(conv_id, 5) if conv_id else {"items": [], "query": None}
    return render("_agent_knowledge.html", items=out["items"], query=out["query"], suggested=True)


# --- acting for the user, compensation (exactly once per form: the form carries its idempotency key) -------

def _form_key():
    key = form_text("idempotency_key")
    if not key or len(key) > 64 or not key.isalnum():
        raise Problem(422, "validation-failed", "Validation failed", "表单已失效，请刷新", errors=[
            {"pointer": "/idempotency_key", "message": "缺少幂等键", "validator": "required"}])
    return "web-" + key


def _action(kind):
    def view():
        body = form_fields("order_no", "user_id", ints=("conversation_id", "ticket_id"), required=("order_no",))
        params = {k[7:]: v.strip() for k, v in request.form.items() if k.startswith("params.") and v.strip()}
        if params:
            body["params"] = params
        status, out = actions.act(kind, g.staff_no, g.principal["id"], _form_key(),
                                  validated("api/service/action.json", body))
        return render("_flash.html", kind="ok", title=f"{ACTION_LABELS[kind]}：{out['state']}",
                      detail=f"订单 {out['order_no']}（操作 #{out['id']}）", code=f"action-{kind}")
    view.__name__ = f"action_{kind}"
    return page(scope="service:write", permission=ACTION_PERMISSIONS[kind])(view)


for _kind in ("invoice", "return", "cancel"):
    bp.add_url_rule(f"/actions/{_kind}", view_func=_action(_kind), methods=["POST"])


@bp.post("/compensations")
@page(scope="service:write", permission="compensation.issue")
def compensate():
    body = dict(form_fields("user_id", "reason", "note", ints=("conversation_id", "ticket_id"),
                            required=("user_id", "reason")), amount_fen=round(_yuan_to_fen(form_text("amount_yuan"))))
    validated("api/service/compensation.json", body)
    key = _form_key()
    keyed = dict(body, _staff_no=g.staff_no)
    status, result, _ = idempotency.run(g.principal["id"], key, "service.compensate", keyed,
                                        lambda: _issued(compensation.issue(g.principal, body)), status_code=201)
    status = result.pop("_status", status)
    if status >= 400:
        raise Problem(status, result.get("code", "refused"), result.get("title", "Refused"), result.get("detail"))
    if result["state"] == "pending_approval":
        return render("_flash.html", kind="ok", title="超出单笔限额，已提交审批",
                      detail=f"赔付 #{result['id']}：¥{result['amount_fen'] / 100:.2f}，等待主管在审批工单 "
                             f"#{result.get('approval_ticket_id')} 中审批",
                      code="compensation-pending")
    return render("_flash.html", kind="ok", title="红包已发放",
                  detail=f"赔付 #{result['id']}：¥{result['amount_fen'] / 100:.2f}", code="compensation-paid")


def _issued(out):
    status, view = out
    return dict(view, _status=status)


def _yuan_to_fen(text):
    try:
        value = float(text)
    except ValueError:
        raise Problem(422, "validation-failed", "Validation failed", "金额格式不正确", errors=[
            {"pointer": "/amount_yuan", "message": "请输入金额（元）", "validator": "type"}]) from None
    if not 0 < value < 1e7:
        raise Problem(422, "validation-failed", "Validation failed", "金额超出范围", errors=[
            {"pointer": "/amount_yuan", "message": "金额需大于 0", "validator": "minimum"}])
    return value * 100
