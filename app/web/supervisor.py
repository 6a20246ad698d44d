"""Supervisor pages: the approvals inbox (compensation above an agent's limit, ticket approval steps)."""
import secrets

import re

from flask import Response, g, request

from app.db import transactional
from app.errors import Problem
from app.platform import auth, charts, clock
from app.services import tickets
from app.services.tickets import stats as tickets_stats
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


# --- statistics -------------------------------------------------------------------------------------------

def _day():
    day = request.args.get("date") or clock.now().date().isoformat()
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", day):
        raise Problem(422, "validation-failed", "Validation failed", "日期格式为 YYYY-MM-DD",
                      errors=[{"pointer": "/query/date", "validator": "format", "message": "YYYY-MM-DD"}])
    return day


@bp.get("/stats")
@page(scope="tickets:read", permission="service.supervise")
def stats():
    """Ticket statistics of the last 30 days and one day's compensation, with server-side SVG charts."""
    data = tickets_stats.stats()
    day = _day()
    comp = compensation.report(day)
    vol = data["volume"]["by_category"]
    age = data["backlog"]["by_age"]
    by_agent = {}
    for item in comp["items"]:
        by_agent[item["staff_no"]] = by_agent.get(item["staff_no"], 0) + item["paid_fen"]
    svg = {
        "volume": charts.bars("近 30 天工单量（按类别）", list(vol), [("工单", list(vol.values()))]),
        "backlog": charts.bars("未结工单（按时长）", list(age), [("未结", list(age.values()))]),
        "compensation": charts.bars(f"{day} 赔付（元，按客服）", list(by_agent),
                                    [("已发放", [round(v / 100, 2) for v in by_agent.values()])]),
    }
    return render("stats.html", data=data, comp=comp, day=day, svg=svg, reasons=_reasons())


@bp.get("/stats/tickets.csv")
@page(scope="tickets:read", permission="service.supervise")
def stats_tickets_csv():
    return Response(tickets_stats.to_csv(tickets_stats.stats()), mimetype="text/csv",
                    headers={"Content-Disposition": "attachment; filename=ticket-stats.csv"})


@bp.get("/stats/compensation.csv")
@page(scope="service:read", permission="service.supervise")
def stats_compensation_csv():
    day = _day()
    return Response(compensation.report_csv(day), mimetype="text/csv",
                    headers={"Content-Disposition": f"attachment; filename=compensation-{day}.csv"})
