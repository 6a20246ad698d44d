"""Compensation (红包赔付): an agent pays a user red packets through the ledger, within policy limits.

The service policy's ``compensation`` section gives the reason codes, the per-role limit of one payment
and the per-role daily budget of an agent. Within both the red packet is paid at once (ledger
``grant_lot``, exactly once); above the payment limit it waits for the approval of someone with
``compensation.approve`` (not the requester; within their own limit), which is noted on the ticket; past
the daily budget it is refused. Every outcome records the policy version and the rule, and is audited.
"""
import datetime as dt

import peewee as pw

from app.db import is_postgres
from app.errors import Problem, not_found
from app.models.service import ServiceCompensation
from app.models.staff import Staff
from app.platform import audit, clock, export, timefmt
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


def _day(now):
    return now.date().isoformat()


def _used_today(staff_no, day):
    return int(ServiceCompensation.select(pw.fn.COALESCE(pw.fn.SUM(ServiceCompensation.amount_fen), 0))
               .where((ServiceCompensation.staff_no == staff_no) & (ServiceCompensation.business_date == day)
                      & ServiceCompensation.state.in_(("paid", "pending_approval"))).scalar() or 0)


def view(c):
    return {"id": c.id, "user_id": c.user_id, "staff_no": c.staff_no, "amount_fen": c.amount_fen,
            "reason": c.reason, "note": c.note, "conversation_id": c.conversation_id, "ticket_id": c.ticket_id,
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


def _note_on_ticket(ticket_id, staff_no, text):
    """A note on the ticket (the tickets context's public comment function), when there is one."""
    if not ticket_id:
        return
    from app.services.service import tickets_port
    tickets_port.note({"kind": "staff", "id": staff_no, "staff_no": staff_no}, ticket_id, text)


def limits(staff_no):
    """What a staff member may pay now: reasons, per-payment limit, daily budget and what is used of it today."""
    doc = settings()
    staff = _staff(staff_no)
    limit, limit_role = _role_value(doc, "limit_fen_by_role", staff)
    budget, budget_role = _role_value(doc, "daily_budget_fen_by_role", staff)
    used = _used_today(staff_no, _day(clock.now()))
    return {"reasons": dict(doc.get("reasons") or {}), "limit_fen": limit, "limit_role": limit_role,
            "budget_fen": budget, "budget_role": budget_role, "used_today_fen": used,
            "left_today_fen": None if budget is None else max(0, budget - used)}


def pending(limit=100):
    """Compensations waiting for approval, oldest first (the approvals inbox)."""
    q = (ServiceCompensation.select().where(ServiceCompensation.state == "pending_approval")
         .order_by(ServiceCompensation.id).limit(limit))
    return [view(c) for c in q]


def issue(staff_no, body):
    """Pay (or ask approval for) a red packet; runs inside the caller's idempotent transaction.

    Returns:
        (status, body): 201 paid, 202 waiting for approval (a compensation view); 409 the problem
        ``daily-budget-exceeded`` (nothing is paid; the refusal is recorded and audited).

    Raises:
        Problem: 422 ``unknown-reason``; 403 ``no-compensation-limit`` (no role with a limit).
    """
    cfg = current()
    doc = settings(cfg)
    now = clock.now()
    reasons = doc.get("reasons") or {}
    if body["reason"] not in reasons:
        raise Problem(422, "unknown-reason", "Unknown reason", f"no compensation reason {body['reason']!r}",
                      allowed=sorted(reasons))
    staff = _staff(staff_no, lock=True)  # serialises one agent's budget checks on PostgreSQL
    limit, limit_role = _role_value(doc, "limit_fen_by_role", staff)
    budget, budget_role = _role_value(doc, "daily_budget_fen_by_role", staff)
    if limit is None or budget is None:
        raise Problem(403, "no-compensation-limit", "No compensation limit",
                      "none of your roles has a compensation limit in the service policy")
    day = _day(now)
    used = _used_today(staff_no, day)
    amount = body["amount_fen"]
    inputs = {"staff_no": staff_no, "amount_fen": amount, "reason": body["reason"], "limit_fen": limit,
              "limit_role": limit_role, "budget_fen": budget, "budget_role": budget_role, "used_today_fen": used}
    subject = f"service:user:{body['user_id']}"
    if used + amount > budget:
        _decide(f"compensation.daily_budget_fen_by_role.{budget_role}", subject, inputs,
                {"refused": "daily-budget-exceeded"}, cfg.version)
        audit.record(f"staff:{staff_no}", "compensation.refused", subject, **inputs)
        # returned, not raised: the refusal's decision and audit rows commit (and the key replays it)
        return 409, Problem(409, "daily-budget-exceeded", "Daily budget exceeded",
                            f"this would bring today's compensation to {used + amount} fen; your daily budget is "
                            f"{budget}", budget_fen=budget, used_today_fen=used).to_dict()
    over = amount > limit
    rule = (f"compensation.limit_fen_by_role.{limit_role}" if over
            else f"compensation.daily_budget_fen_by_role.{budget_role}")
    c = ServiceCompensation.create(user_id=body["user_id"], staff_no=staff_no, amount_fen=amount,
                                   reason=body["reason"], note=body.get("note", ""),
                                   conversation_id=body.get("conversation_id"), ticket_id=body.get("ticket_id"),
                                   state="pending_approval" if over else "paid", business_date=day,
                                   policy_version=cfg.version, rule=rule, created_at=now)
    if not over:
        c.journal_id = _pay(c, doc, f"staff:{staff_no}")
        c.save()
    _decide(rule, f"service:compensation:{c.id}", inputs, {"state": c.state, "journal_id": c.journal_id},
            cfg.version)
    audit.record(f"staff:{staff_no}", "compensation.paid" if not over else "compensation.requested",
                 f"service:compensation:{c.id}", user_id=c.user_id, amount_fen=amount, reason=c.reason)
    _note_on_ticket(c.ticket_id, staff_no,
                    f"红包赔付 {amount / 100:.2f} 元（{reasons[c.reason]}）"
                    + ("，超出单笔限额，待审批" if over else "，已发放") + f" [compensation {c.id}]")
    return (202 if over else 201), view(c)


def decide(staff_no, comp_id, approve, note=None):
    """Approve (pay) or reject a compensation waiting for approval; the approver is not the requester."""
    cfg = current()
    doc = settings(cfg)
    q = ServiceCompensation.select().where(ServiceCompensation.id == comp_id)
    c = (q.for_update() if is_postgres() else q).first()
    if c is None:
        raise not_found("compensation", comp_id)
    if c.state != "pending_approval":
        raise Problem(409, "not-pending", "Not pending", f"compensation {comp_id} is {c.state}")
    if c.staff_no == staff_no:
        raise Problem(403, "own-request", "Own request", "a compensation is approved by someone other than its requester")
    approver = _staff(staff_no)
    limit, role = _role_value(doc, "limit_fen_by_role", approver)
    if approve and (limit is None or c.amount_fen > limit):
        raise Problem(403, "above-your-limit", "Above your limit",
                      f"{c.amount_fen} fen is above your approval limit ({limit})", limit_fen=limit)
    now = clock.now()
    c.state, c.decided_by, c.decided_at = ("paid" if approve else "rejected"), staff_no, now
    if approve:
        c.journal_id = _pay(c, doc, f"staff:{staff_no}")
    c.save()
    _decide(f"compensation.limit_fen_by_role.{role}" if approve else "compensation.approval",
            f"service:compensation:{c.id}", {"approver": staff_no, "amount_fen": c.amount_fen, "limit_fen": limit},
            {"state": c.state, "journal_id": c.journal_id}, cfg.version)
    audit.record(f"staff:{staff_no}", f"compensation.{'approved' if approve else 'rejected'}",
                 f"service:compensation:{c.id}", amount_fen=c.amount_fen, note=note)
    _note_on_ticket(c.ticket_id, staff_no, f"红包赔付 [compensation {c.id}] {'已审批发放' if approve else '已驳回'}"
                    + (f"：{note}" if note else ""))
    return view(c)


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
