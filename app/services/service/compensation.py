"""Compensation (红包赔付): an agent pays a user red packets through the ledger, within policy limits.

The service policy's ``compensation`` section gives the reason codes, the per-role limit of one payment
and the per-role daily budget of an agent (counted per business day, in the service calendar's time zone).
Within both the red packet is paid at once (ledger ``grant_lot``, exactly once). Above the payment limit
it becomes an approval step on a ticket of ``approval_category`` (the tickets workflow): the workflow's
approve enters a state whose ``pay_compensation`` action pays it once (the approver is not the requester
and is within their own limit), its reject enters one whose ``refuse_compensation`` pays nothing. Past the
daily budget it is refused. Every outcome records the policy version and the rule, and is audited.
"""

import datetime as dt

import peewee as pw

from app.db import is_postgres
from app.errors import Problem, not_found
from app.models.service import ServiceCompensation
from app.models.staff import Staff
from app.platform import audit, calendar as calmath, clock, export, timefmt
from app.services.service.policy import current


def settings(cfg=None):
    cfg = cfg or current()
    doc = cfg.doc.get("compensation")
    if not doc:
        raise Problem(503, "policy-missing", "Policy missing", "the service policy has no 'compensation' section")
    return doc


def _staff(staff_no, lock=False):
    q = Staff.select().where(Staff.staff_no == staff_no)
    s = (q.for_update() if lock and is_postgres() else q).first()
    if s is None:
        raise not_found("staff", staff_no)
    return s


def _role_value(doc, name, staff):
    by_role = doc.get(name) or {}
    values = [(int(by_role[r]), r) for r in staff.roles.split() if r in by_role]
    return max(values) if values else (None, None)


def business_date(now=None, cfg=None):
    """The business day (YYYY-MM-DD in the service calendar's time zone) at ``now`` (default: the clock)."""
    cfg = cfg or current()
    return calmath.local_date(cfg.calendar, now or clock.now()).isoformat()


def _used_today(staff_no, day):
    return int(ServiceCompensation.select(pw.fn.COALESCE(pw.fn.SUM(ServiceCompensation.amount_fen), 0))
               .where((ServiceCompensation.staff_no == staff_no) & (ServiceCompensation.business_date == day)
                      & ServiceCompensation.state.in_(("paid", "pending_approval"))).scalar() or 0)


def view(c):
    return {"id": c.id, "user_id": c.user_id, "staff_no": c.staff_no, "amount_fen": c.amount_fen,
            "reason": c.reason, "note": c.note, "conversation_id": c.conversation_id, "ticket_id": c.ticket_id,
            "approval_ticket_id": c.approval_ticket_id,
            "state": c.state, "business_date": c.business_date, "policy_version": c.policy_version, "rule": c.rule,
            "journal_id": c.journal_id, "decided_by": c.decided_by,
            "decided_at": timefmt.iso(c.decided_at) if c.decided_at else None,
            "created_at": timefmt.iso(c.created_at)}


def _pay(c, doc, actor):
    from app.services.service import ledger_port
    expires = None
    if doc.get("expires_days"):
        expires = timefmt.iso((clock.now() + dt.timedelta(days=int(doc["expires_days"]))).replace(microsecond=0))
    return ledger_port.grant(c.user_id, doc.get("asset", "RED_PACKET"), c.amount_fen, expires,
                             f"service-compensation:{c.id}", f"compensation-{c.id}", actor)


def _decide(rule, subject, inputs, outcome, version):
    from app.policy import decisions
    return decisions.record("service", version, rule, subject, inputs, outcome)


def _note_on_ticket(principal, ticket_id, text):
    """A note on the ticket (the tickets context's public comment function), when there is one."""
    if not ticket_id:
        return
    from app.services.service import tickets_port
    tickets_port.note(principal, ticket_id, text)


def limits(staff_no):
    """What a staff member may pay now: reasons, per-payment limit, daily budget and what is used of it today."""
    doc = settings()
    staff = _staff(staff_no)
    limit, limit_role = _role_value(doc, "limit_fen_by_role", staff)
    budget, budget_role = _role_value(doc, "daily_budget_fen_by_role", staff)
    used = _used_today(staff_no, business_date())
    return {"reasons": dict(doc.get("reasons") or {}), "limit_fen": limit, "limit_role": limit_role,
            "budget_fen": budget, "budget_role": budget_role, "used_today_fen": used,
            "left_today_fen": None if budget is None else max(0, budget - used)}


def pending(limit=100):
    """Compensations waiting for approval, oldest first (the approvals inbox)."""
    q = (ServiceCompensation.select().where(ServiceCompensation.state == "pending_approval")
         .order_by(ServiceCompensation.id).limit(limit))
    return [view(c) for c in q]


def _open_approval(principal, c, doc, reasons):
    """The approval ticket of a payment above the payer's limit (the tickets workflow decides it)."""
    from app.services.service import complaints, tickets_port
    yuan = f"{c.amount_fen / 100:.2f}"
    body = {"category": doc["approval_category"], "title": f"红包赔付审批：{yuan} 元（{reasons[c.reason]}）",
            "body": (f"客服 {c.staff_no} 申请向用户 {c.user_id} 发放红包 {yuan} 元，原因：{reasons[c.reason]}"
                     + (f"；说明：{c.note}" if c.note else "") + f"。超出单笔限额，审批通过后发放。[compensation {c.id}]"),
            "user_id": c.user_id, "source": "agent", "amount_fen": c.amount_fen, "tags": ["compensation"]}
    if c.conversation_id:
        body["conversation_ref"] = complaints.transcript_ref(c.conversation_id)
    return tickets_port.open_ticket(principal, body)


def issue(principal, body):
    """Pay a red packet, or put it up for approval on a ticket; runs inside the caller's idempotent transaction.

    Args:
        principal: the acting staff member (session or act-as key; ``staff_no`` set).
        body: validated compensation body (schemas/api/service/compensation.json).

    Returns:
        (status, body): 201 paid, 202 waiting for the approval ticket (a compensation view with
        ``approval_ticket_id``); 409 the problem ``daily-budget-exceeded`` (nothing is paid; the refusal is
        recorded and audited).

    Raises:
        Problem: 422 ``unknown-reason``; 403 ``no-compensation-limit`` (no role with a limit); 409
            ``ticket-of-another-user``.
    """
    staff_no = principal["staff_no"]
    cfg = current()
    doc = settings(cfg)
    now = clock.now()
    reasons = doc.get("reasons") or {}
    if body["reason"] not in reasons:
        raise Problem(422, "unknown-reason", "Unknown reason", f"no compensation reason {body['reason']!r}",
                      allowed=sorted(reasons))
    if body.get("ticket_id"):
        from app.services.service import tickets_port
        if tickets_port.ticket_user(body["ticket_id"]) != body["user_id"]:
            raise Problem(409, "ticket-of-another-user", "Ticket of another user",
                          f"ticket {body['ticket_id']} belongs to another user")
    staff = _staff(staff_no, lock=True)  # serialises one agent's budget checks on PostgreSQL
    limit, limit_role = _role_value(doc, "limit_fen_by_role", staff)
    budget, budget_role = _role_value(doc, "daily_budget_fen_by_role", staff)
    if limit is None or budget is None:
        raise Problem(403, "no-compensation-limit", "No compensation limit",
                      "none of your roles has a compensation limit in the service policy")
    day = business_date(now, cfg)
    used = _used_today(staff_no, day)
    amount = body["amount_fen"]
    inputs = {"staff_no": staff_no, "amount_fen": amount, "reason": body["reason"], "limit_fen": limit,
              "limit_role": limit_role, "budget_fen": budget, "budget_role": budget_role, "used_today_fen": used,
              "business_date": day}
    subject = f"service:user:{body['user_id']}"
    if used + amount > budget:
        _decide(f"compensation.daily_budget_fen_by_role.{budget_role}", subject, inputs,
                {"refused": "daily-budget-exceeded"}, cfg.version)
        audit.record(f"staff:{staff_no}", "compensation.refused", subject, **inputs)
        # returned, not raised: the refusal's decision and audit rows commit (and the key replays it)
        return 409, Problem(409, "daily-budget-exceeded", "Daily budget exceeded",
                            f"this would bring compensation on business day {day} to {used + amount} fen; your "
                            f"daily budget is {budget}", budget_fen=budget, used_today_fen=used,
                            business_date=day).to_dict()
    over = amount > limit
    rule = (f"compensation.limit_fen_by_role.{limit_role}" if over
            else f"compensation.daily_budget_fen_by_role.{budget_role}")
    c = ServiceCompensation.create(user_id=body["user_id"], staff_no=staff_no, amount_fen=amount,
                                   reason=body["reason"], note=body.get("note", ""),
                                   conversation_id=body.get("conversation_id"), ticket_id=body.get("ticket_id"),
                                   state="pending_approval" if over else "paid", business_date=day,
                                   policy_version=cfg.version, rule=rule, created_at=now)
    if over:
        c.approval_ticket_id = _open_approval(principal, c, doc, reasons)
    else:
        c.journal_id = _pay(c, doc, f"staff:{staff_no}")
    c.save()
    _decide(rule, f"service:compensation:{c.id}", inputs,
            {"state": c.state, "journal_id": c.journal_id, "approval_ticket_id": c.approval_ticket_id}, cfg.version)
    audit.record(f"staff:{staff_no}", "compensation.paid" if not over else "compensation.requested",
                 f"service:compensation:{c.id}", user_id=c.user_id, amount_fen=amount, reason=c.reason,
                 approval_ticket_id=c.approval_ticket_id)
    _note_on_ticket(principal, c.ticket_id,
                    f"红包赔付 {amount / 100:.2f} 元（{reasons[c.reason]}）"
                    + (f"，超出单笔限额，待审批（工单 {c.approval_ticket_id}）" if over else "，已发放")
                    + f" [compensation {c.id}]")
    return (202 if over else 201), view(c)


def _held(ticket_id):
    """The compensation waiting for this approval ticket, locked (None when the ticket holds none)."""
    q = ServiceCompensation.select().where(ServiceCompensation.approval_ticket_id == ticket_id)
    return (q.for_update() if is_postgres() else q).first()


def pay_on_approval(ticket_id, staff_no, actor, policy_version, rule, now):
    """Ticket action ``pay_compensation``: the approval ticket was approved; pay its red packet once.

    Runs in the transition's transaction (the tickets workflow runs each entry's actions once). The approver
    is not the requester and is within their own per-payment limit; else a Problem refuses the transition.

    Returns:
        {"compensation_id", "state", "journal_id"} (the ticket's action record).
    """
    c = _held(ticket_id)
    if c is None:
        return {"compensation_id": None}
    if c.state != "pending_approval":
        return {"compensation_id": c.id, "state": c.state, "journal_id": c.journal_id}
    cfg = current()
    doc = settings(cfg)
    if staff_no == c.staff_no:
        raise Problem(403, "own-request", "Own request",
                      "a compensation is approved by someone other than its requester")
    limit, role = (None, None) if staff_no is None else _role_value(doc, "limit_fen_by_role", _staff(staff_no))
    if limit is None or c.amount_fen > limit:
        raise Problem(403, "above-your-limit", "Above your limit",
                      f"{c.amount_fen} fen is above your approval limit ({limit})", limit_fen=limit)
    c.state, c.decided_by, c.decided_at = "paid", staff_no, now
    c.policy_version, c.rule = policy_version, f"tickets:{rule}"
    c.journal_id = _pay(c, doc, actor)
    c.save()
    _decide(c.rule, f"service:compensation:{c.id}",
            {"approver": staff_no, "amount_fen": c.amount_fen, "approver_limit_fen": limit,
             "approver_limit_rule": f"compensation.limit_fen_by_role.{role}", "approval_ticket_id": ticket_id},
            {"state": c.state, "journal_id": c.journal_id}, policy_version)
    audit.record(actor, "compensation.approved", f"service:compensation:{c.id}", amount_fen=c.amount_fen,
                 approval_ticket_id=ticket_id, journal_id=c.journal_id)
    _note_on_ticket({"kind": "staff", "id": staff_no, "staff_no": staff_no}, c.ticket_id if staff_no else None,
                    f"红包赔付 [compensation {c.id}] 已审批发放（工单 {ticket_id}）")
    return {"compensation_id": c.id, "state": c.state, "journal_id": c.journal_id}


def refuse_on_rejection(ticket_id, staff_no, actor, policy_version, rule, now):
    """Ticket action ``refuse_compensation``: the approval ticket was rejected; nothing is paid."""
    c = _held(ticket_id)
    if c is None:
        return {"compensation_id": None}
    if c.state != "pending_approval":
        return {"compensation_id": c.id, "state": c.state}
    c.state, c.decided_by, c.decided_at = "rejected", staff_no, now
    c.policy_version, c.rule = policy_version, f"tickets:{rule}"
    c.save()
    _decide(c.rule, f"service:compensation:{c.id}", {"approver": staff_no, "amount_fen": c.amount_fen,
                                                     "approval_ticket_id": ticket_id},
            {"state": c.state}, policy_version)
    audit.record(actor, "compensation.rejected", f"service:compensation:{c.id}", amount_fen=c.amount_fen,
                 approval_ticket_id=ticket_id)
    _note_on_ticket({"kind": "staff", "id": staff_no, "staff_no": staff_no}, c.ticket_id if staff_no else None,
                    f"红包赔付 [compensation {c.id}] 已驳回（工单 {ticket_id}）")
    return {"compensation_id": c.id, "state": c.state}


def get(comp_id):
    c = ServiceCompensation.get_or_none(ServiceCompensation.id == comp_id)
    if c is None:
        raise not_found("compensation", comp_id)
    return view(c)


def report(day):
    """Compensation of one day by agent and reason: paid count/amount, pending and rejected counts."""
    rows = (ServiceCompensation.select(ServiceCompensation.staff_no, ServiceCompensation.reason,
                                       ServiceCompensation.state, pw.fn.COUNT(ServiceCompensation.id),
                                       pw.fn.SUM(ServiceCompensation.amount_fen))
            .where(ServiceCompensation.business_date == day)
            .group_by(ServiceCompensation.staff_no, ServiceCompensation.reason, ServiceCompensation.state).tuples())
    out = {}
    for staff_no, reason, state, n, amount in rows:
        item = out.setdefault((staff_no, reason), {"staff_no": staff_no, "reason": reason, "paid_count": 0,
                                                   "paid_fen": 0, "pending_count": 0, "pending_fen": 0,
                                                   "rejected_count": 0})
        if state == "paid":
            item["paid_count"], item["paid_fen"] = int(n), int(amount or 0)
        elif state == "pending_approval":
            item["pending_count"], item["pending_fen"] = int(n), int(amount or 0)
        else:
            item["rejected_count"] = int(n)
    items = [out[k] for k in sorted(out)]
    return {"date": day, "items": items, "total_paid_fen": sum(i["paid_fen"] for i in items)}


CSV_FIELDS = ("staff_no", "reason", "paid_count", "paid_fen", "pending_count", "pending_fen", "rejected_count")


def report_csv(day):
    """The report as CSV with a UTF-8 BOM (Excel opens Chinese text right)."""
    return export.csv_text(CSV_FIELDS, report(day)["items"])
