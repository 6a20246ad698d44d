"""Supervisor pages: the approvals inbox (compensation above an agent's limit, ticket approval steps)."""
import secrets

from flask import g

from app.db import transactional
from app.errors import Problem
from app.platform import auth
from app.services import tickets
from app.services.service import compensation, desk
from app.web.base import blueprint, form_fields, form_text, page, render, validated

bp = blueprint("web_supervisor", "/web")

APPROVERS = ("compensation.approve", "ticket.approve.l1", "ticket.approve.l2")


def _inbox():
    p = g.principal
    comps = compensation.pending() if auth.has_permission(p, "compensation.approve") else []
    levels = [lv for lv, perm in ((1, "ticket.approve.l1"), (2, "ticket.approve.l2")) if auth.has_permission(p, perm)]
    ticket_rows = tickets.awaiting_approval(levels) if levels else []
    return {"compensations": comps, "tickets": ticket_rows, "new_key": secrets.token_hex(12),
            "reasons": _reasons()}


def _reasons():
    try:
        return compensation.settings().get("reasons") or {}
    except Problem:
        return {}


@bp.get("/approvals")
@page(permission=APPROVERS)
def approvals():
    return render("approvals.html", **_inbox())


@bp.get("/approvals/list")
@page(permission=APPROVERS)
def approvals_list():
    return render("_approvals_list.html", **_inbox())


@bp.post("/approvals/compensations/<int:comp_id>")
@page(scope="service:write", permission="compensation.approve")
def decide_compensation(comp_id):
    body = form_fields("decision", "note", required=("decision",))
    validated("api/service/compensation_decision.json", body)
    out = transactional()(compensation.decide)(g.staff_no, comp_id, body["decision"] == "approve", body.get("note"))
    resp = render("_flash.html", kind="ok", title="已批准并发放" if out["state"] == "paid" else "已驳回",
                  detail=f"赔付 #{comp_id}：¥{out['amount_fen'] / 100:.2f}", code=f"compensation-{out['state']}")
    resp.headers["HX-Trigger"] = "approvals-refresh"
    return resp


@bp.post("/approvals/tickets/<int:ticket_id>")
@page(scope="tickets:write", permission=("ticket.approve.l1", "ticket.approve.l2"))
def decide_ticket(ticket_id):
    body = form_fields("decision", "comment", required=("decision",))
    validated("api/tickets/approval.json", body)
    key = form_text("idempotency_key")
    _, out, _ = tickets.approve(g.principal, ticket_id, body, f"web-{key}" if key.isalnum() else None)
    resp = render("_flash.html", kind="ok", title="已审批" if body["decision"] == "approve" else "已驳回",
                  detail=f"工单 #{ticket_id}：{out.get('state_label') or out.get('state', '')}",
                  code=f"ticket-{body['decision']}")
    resp.headers["HX-Trigger"] = "approvals-refresh"
    return resp


# --- the floor ---------------------------------------------------------------------------------------

@bp.get("/floor")
@page(scope="service:read", permission="service.supervise")
def floor():
    return render("floor.html", floor=desk.floor())


@bp.get("/floor/live")
@page(scope="service:read", permission="service.supervise")
def floor_live():
    return render("_floor.html", floor=desk.floor())
