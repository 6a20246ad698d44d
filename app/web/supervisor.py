"""Supervisor pages: the approvals inbox (ticket approval steps; a compensation above an agent's limit is one: its
approval ticket pays it), the floor, statistics, QA, rosters."""
import secrets

from flask import Response, g, request

from app.errors import Problem
from app.platform import auth, charts
from app.services import tickets
from app.services.tickets import stats as tickets_stats
from app.services.service import compensation, monitoring, stats as service_stats
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

FLOOR = {"scope": "service:read", "permission": ("service.floor.view", "service.supervise")}


def _floor():
    return {"floor": monitoring.floor(), "alerts": monitoring.list_alerts("open", 20)["items"]}


@bp.get("/floor")
@page(**FLOOR)
def floor():
    return render("floor.html", **_floor())


@bp.get("/floor/live")
@page(**FLOOR)
def floor_live():
    return render("_floor.html", **_floor())


@bp.post("/floor/alerts/<int:alert_id>/acknowledge")
@page(scope="service:write", permission="service.alerts.manage")
def acknowledge_alert(alert_id):
    monitoring.acknowledge(g.staff_no, alert_id, form_text("note") or None)
    return render("_floor.html", **_floor())


# --- statistics -------------------------------------------------------------------------------------------

def _stats_query():
    args = {"from": request.args.get("from") or "", "to": request.args.get("to") or "", "by": "agent"}
    return service_stats.parse_query({k: v for k, v in args.items() if v})


@bp.get("/stats")
@page(**FLOOR)
def stats():
    """Service statistics per business day and agent (the same numbers as GET /v1/service/stats), ticket SLA,
    with server-side SVG charts and CSV exports."""
    start, end, dims, group = _stats_query()
    result = service_stats.statistics(start, end, dims, group)
    by_agent = {}
    for row in result["items"]:
        agg = by_agent.setdefault(row["agent"] or "-", {"served": 0, "compensation_fen": 0})
        agg["served"] += row["served"] or 0
        agg["compensation_fen"] += row["compensation_fen"] or 0
    names = list(by_agent)
    tdata = tickets_stats.stats()
    vol = tdata["volume"]["by_category"]
    svg = {
        "served": charts.bars("接待量（按客服）", names, [("已接待", [by_agent[n]["served"] for n in names])]),
        "compensation": charts.bars("赔付金额（元，按客服）", names,
                                    [("已发放", [round(by_agent[n]["compensation_fen"] / 100, 2) for n in names])]),
        "tickets": charts.bars("近 30 天工单量（按类别）", list(vol), [("工单", list(vol.values()))]),
    }
    return render("stats.html", result=result, tdata=tdata, svg=svg, start=start, end=end)


@bp.get("/stats/service.csv")
@page(**FLOOR)
def stats_service_csv():
    start, end, dims, group = _stats_query()
    return Response(service_stats.statistics_csv(service_stats.statistics(start, end, dims, group)),
                    content_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f"attachment; filename=service-stats-{start}-{end}.csv"})


@bp.get("/stats/tickets.csv")
@page(scope="tickets:read", permission=("service.floor.view", "service.supervise"))
def stats_tickets_csv():
    return Response(tickets_stats.to_csv(tickets_stats.stats()), mimetype="text/csv",
                    headers={"Content-Disposition": "attachment; filename=ticket-stats.csv"})
