"""Ticket SLA clocks (start, respond, pause/resume, resolve) and the set-based watcher (warn, escalate)."""
import uuid

import peewee as pw

from app.platform import clock
from app.db import write_transaction

from app.models.staff import Staff
from app.models.policy import Decision
from app.models.tickets import Ticket, TicketEvent, TicketSlaEvent
from app.platform import outbox, sql as fastsql
from app.platform import calendar as slamath
from app.services.tickets import policy as tickets_policy
from app.platform.timefmt import iso


def _clock(cfg, cal, start, minutes):
    secs = minutes * 60
    pct = cfg.sla["warn_at_percent"]
    return (slamath.add_business_seconds(cal, start, secs * pct // 100),
            slamath.add_business_seconds(cal, start, secs))


def _cal(cfg, t):
    return cfg.calendar(t.sla_calendar or cfg.sla["calendar"])


def start(cfg, t, now):
    """Start the first-response and resolution clocks of a new ticket (four instants, one calendar walk)."""
    cal_name, targets = cfg.sla_target(t.category, t.priority)
    t.sla_calendar = cal_name
    pct = cfg.sla["warn_at_percent"]
    response, resolution = targets["first_response"] * 60, targets["resolution"] * 60
    r_warn, r_due, s_warn, s_due = slamath.add_business_seconds_many(
        _cal(cfg, t), now, [response * pct // 100, response, resolution * pct // 100, resolution])
    t.response_metric, t.response_started_at = "first_response", now
    t.response_warn_at, t.response_due_at, t.response_check_at = r_warn, r_due, r_warn
    t.resolution_warn_at, t.resolution_due_at, t.resolution_check_at = s_warn, s_due, s_warn


def _start_response(cfg, t, now, metric, minutes):
    warn, due = _clock(cfg, _cal(cfg, t), now, minutes)
    t.response_metric, t.response_started_at = metric, now
    t.response_warn_at, t.response_due_at, t.response_check_at = warn, due, warn


def _start_resolution(cfg, t, now, minutes):
    warn, due = _clock(cfg, _cal(cfg, t), now, minutes)
    t.resolution_warn_at, t.resolution_due_at, t.resolution_check_at = warn, due, warn


def priority_changed(cfg, t, now):
    """A new priority: the clocks still running get that priority's targets, counted from this moment.

    A paused ticket counts from the pause (``resume`` then moves the deadlines by the time paused).
    Stopped clocks (responded, resolved, terminal) and recorded breaches stay as they are.
    """
    if t.terminal:
        return
    t.sla_calendar, targets = cfg.sla_target(t.category, t.priority)  # priorities may keep other hours
    start_at = t.sla_paused_at or now
    if t.response_metric:
        _start_response(cfg, t, start_at, t.response_metric, targets[t.response_metric])
    if t.resolved_at is None and t.resolution_due_at is not None:
        _start_resolution(cfg, t, start_at, targets["resolution"])


def responded(t, now):
    """Staff answered the user: the running response clock stops (first response is remembered)."""
    if not t.response_metric:
        return
    if t.response_metric == "first_response" and t.first_response_at is None:
        t.first_response_at = now
        t.first_response_secs = int((now - t.created_at).total_seconds())
    if t.response_due_at and now > t.response_due_at:
        t.response_breached = True
    t.response_metric = t.response_started_at = None
    t.response_warn_at = t.response_check_at = None


def user_replied(cfg, t, now):
    """The user wrote again: a next-response clock starts unless one is running."""
    if t.terminal or t.response_metric or t.resolved_at:
        return
    _, targets = cfg.sla_target(t.category, t.priority)
    _start_response(cfg, t, now, "next_response", targets["next_response"])


def pause(t, now):
    """Entering a pending-on-user state: clocks stop counting."""
    if t.sla_paused_at is None:
        t.sla_paused_at = now


def resume(cfg, t, now):
    """Leaving a pending-on-user state: every pending deadline moves by the business time paused."""
    if t.sla_paused_at is None:
        return
    cal, paused = _cal(cfg, t), t.sla_paused_at
    for name in ("response_warn_at", "response_due_at", "response_check_at",
                 "resolution_warn_at", "resolution_due_at", "resolution_check_at"):
        value = getattr(t, name)
        if value is not None and value > paused:
            remaining = slamath.business_seconds(cal, paused, value)
            setattr(t, name, slamath.add_business_seconds(cal, now, remaining))
    t.sla_paused_at = None


def resolved(cfg, t, now):
    """The ticket reached a resolving state: the resolution clock stops, compliance is settled."""
    if t.resolved_at is None:
        t.resolved_at = now
        t.resolution_secs = int((now - t.created_at).total_seconds())
        t.resolution_business_secs = slamath.business_seconds(_cal(cfg, t), t.created_at, now)
    if t.resolution_due_at and now > t.resolution_due_at:
        t.resolution_breached = True
    t.resolution_check_at = None
    responded(t, now)
    t.sla_paused_at = None


def reopened(cfg, t, now):
    """Back from a resolving state: a fresh resolution clock."""
    _, targets = cfg.sla_target(t.category, t.priority)
    t.resolved_at = t.resolution_secs = t.resolution_business_secs = None
    _start_resolution(cfg, t, now, targets["resolution"])


def stopped(t):
    """Terminal state: nothing left to watch."""
    t.response_check_at = t.resolution_check_at = None
    t.response_metric = None
    t.sla_paused_at = None


def state_of(t, now=None):
    """``ok`` | ``warning`` | ``breached`` as the watcher last recorded it."""
    return t.sla_state


def risk_counts(ticket_ids, now=None):
    """How many of the tickets ``ticket_ids`` are near an SLA breach (a running clock past its warning, not yet
    due) and how many are breached (a running clock past due), from the clock now, not the watcher's record.

    Args:
        ticket_ids: a select of ticket ids (a subquery: only open, unpaused tickets are read), or ids.
        now: the instant (default: the clock).

    Returns:
        {"at_risk": n, "breached": n}.
    """
    now = now or clock.now()
    if isinstance(ticket_ids, (list, tuple, set, frozenset)) and not ticket_ids:
        return {"at_risk": 0, "breached": 0}
    if isinstance(ticket_ids, (set, frozenset)):
        ticket_ids = sorted(ticket_ids)
    running_response = Ticket.response_metric.is_null(False) & Ticket.response_due_at.is_null(False)
    running_resolution = Ticket.resolved_at.is_null() & Ticket.resolution_due_at.is_null(False)
    breached = ((running_response & (Ticket.response_due_at <= now))
                | (running_resolution & (Ticket.resolution_due_at <= now)))
    warned = ((running_response & (Ticket.response_warn_at <= now))
              | (running_resolution & (Ticket.resolution_warn_at <= now)))
    base = (Ticket.id.in_(ticket_ids) & (Ticket.terminal == False)  # noqa: E712
            & Ticket.sla_paused_at.is_null())
    n_breached = Ticket.select().where(base & breached).count()
    n_warned = Ticket.select().where(base & warned & ~breached).count()
    return {"at_risk": n_warned, "breached": n_breached}


_RAISE = pw.Case(Ticket.priority, [("P4", "P3"), ("P3", "P2"), ("P2", "P1")], "P1")


def watch(now=None, tick=None):
    """One watcher tick: record each due warning and breach exactly once, then escalate the breaches.

    Set-based: only tickets whose ``*_check_at`` index entry is due are touched. Each warning/breach
    is a row unique on (ticket, kind, metric, target due time), inserted with ON CONFLICT DO NOTHING,
    so concurrent ticks on several workers record it once; the follow-up (history, escalation,
    notifications) applies only to the rows this tick inserted.

    Args:
        now: naive-UTC instant (default: the clock).
        tick: a unique id for this tick (default: random).

    Returns:
        dict: warnings, breaches (inserted by this tick).
    """
    now = now or clock.now()
    tick = tick or uuid.uuid4().hex
    cfg = tickets_policy.current()
    esc = cfg.sla.get("escalation") or {}
    with write_transaction():
        for target in ("response", "resolution"):
            check = getattr(Ticket, f"{target}_check_at")
            due = getattr(Ticket, f"{target}_due_at")
            metric = Ticket.response_metric if target == "response" else pw.Value("resolution")
            base = (check <= now) & Ticket.sla_paused_at.is_null() & due.is_null(False)
            fields = [TicketSlaEvent.ticket_id, TicketSlaEvent.kind, TicketSlaEvent.metric,
                      TicketSlaEvent.target_due_at, TicketSlaEvent.created_at, TicketSlaEvent.tick]
            for kind, cond in (("warning", due > now), ("breach", due <= now)):
                src = Ticket.select(Ticket.id, pw.Value(kind), metric, due, pw.Value(now), pw.Value(tick)) \
                    .where(base & cond)
                TicketSlaEvent.insert_from(src, fields).on_conflict_ignore().execute()
            Ticket.update({check: pw.Case(None, [(due <= now, None)], due)}).where(base).execute()
        mine = TicketSlaEvent.select(TicketSlaEvent.ticket_id).where(TicketSlaEvent.tick == tick)
        Ticket.update(sla_state="warning").where(
            Ticket.id.in_(mine.where(TicketSlaEvent.kind == "warning")) & (Ticket.sla_state == "ok")).execute()
        breached = mine.where(TicketSlaEvent.kind == "breach")
        updates = {Ticket.sla_state: "breached", Ticket.escalation_level: Ticket.escalation_level + 1,
                   Ticket.updated_at: now}
        if esc.get("raise_priority"):
            updates[Ticket.priority] = _RAISE
        Ticket.update(updates).where(Ticket.id.in_(breached)).execute()
        if esc.get("assign_role"):
            _assign_escalations(cfg, esc["assign_role"], breached, now)
        Ticket.update(response_breached=True).where(Ticket.id.in_(
            breached.where(TicketSlaEvent.metric != "resolution"))).execute()
        Ticket.update(resolution_breached=True).where(Ticket.id.in_(
            breached.where(TicketSlaEvent.metric == "resolution"))).execute()
        history = (TicketSlaEvent
                   .select(TicketSlaEvent.ticket_id, pw.Value(now), pw.Value("system:sla-watch"),
                           pw.Case(TicketSlaEvent.kind, [("warning", "sla_warning")], "sla_escalation"),
                           pw.Value("sla"), TicketSlaEvent.metric, pw.Value(cfg.version),
                           pw.Value("sla.escalation"))
                   .where(TicketSlaEvent.tick == tick))
        TicketEvent.insert_from(history, [TicketEvent.ticket, TicketEvent.at, TicketEvent.actor, TicketEvent.kind,
                                          TicketEvent.field, TicketEvent.to_value, TicketEvent.policy_version,
                                          TicketEvent.rule]).execute()
        fired = list(TicketSlaEvent
                     .select(TicketSlaEvent.id, TicketSlaEvent.kind, TicketSlaEvent.metric,
                             TicketSlaEvent.target_due_at, Ticket.id.alias("tid"), Ticket.department,
                             Ticket.priority, Ticket.assignee, Ticket.category)
                     .join(Ticket, on=(Ticket.id == TicketSlaEvent.ticket_id))
                     .where(TicketSlaEvent.tick == tick).dicts())
        messages = []
        for row in fired:
            topic = "ticket.sla_warning" if row["kind"] == "warning" else "ticket.escalated"
            payload = {"ticket_id": row["tid"], "metric": row["metric"], "kind": row["kind"],
                       "due_at": iso(row["target_due_at"]), "department": row["department"],
                       "priority": row["priority"], "assignee": row["assignee"], "category": row["category"],
                       "notify": esc.get("notify") if row["kind"] == "breach" else ["assignee", "department"],
                       "policy_version": cfg.version}
            messages.append((topic, payload, f"ticket:{row['tid']}", f"sla-event:{row['id']}"))
        outbox.publish_many(messages)
    return {"warnings": sum(r["kind"] == "warning" for r in fired),
            "breaches": sum(r["kind"] == "breach" for r in fired), "tick": tick}


def _assign_escalations(cfg, role, breached, now):
    """Each breached ticket goes to a holder of ``role`` in its department: the least-loaded one on shift
    (service context's workforce policy), else the department's first as before; each choice is a decision."""
    from app.policy import decisions
    from app.services.tickets import service_port
    rows = list(Ticket.select(Ticket.id, Ticket.department, Ticket.assignee)
                .where(Ticket.id.in_(breached)).order_by(Ticket.id))
    if not rows:
        return
    depts = sorted({r.department for r in rows})
    staff = list(Staff.select(Staff.staff_no, Staff.department)
                 .where(Staff.department.in_(depts) & (Staff.active == True)  # noqa: E712
                        & Staff.roles.contains(f" {role} ")).order_by(Staff.id))
    candidates = {d: [s.staff_no for s in staff if s.department == d] for d in depts}
    everyone = [s.staff_no for s in staff]
    loads = {}
    if everyone:
        loads = {r.assignee: r.n for r in Ticket.select(Ticket.assignee, pw.fn.COUNT(Ticket.id).alias("n"))
                 .where(Ticket.assignee.in_(everyone) & (Ticket.terminal == False))  # noqa: E712
                 .group_by(Ticket.assignee)}
    pick_for = service_port.escalation_picker(now)
    moved, logged = {}, []
    for r in rows:
        pick, rule, inputs, outcome, version = pick_for(candidates[r.department], loads)
        if pick is not None and pick != r.assignee:
            moved.setdefault(pick, []).append(r.id)
            loads[pick] = loads.get(pick, 0) + 1
            if r.assignee in loads:
                loads[r.assignee] -= 1
        logged.append(decisions.row("sla", version or cfg.version, rule, f"ticket:{r.id}",
                                    dict(inputs, department=r.department, role=role), outcome))
    for pick, ids in moved.items():
        Ticket.update(assignee=pick).where(Ticket.id.in_(ids)).execute()
    fastsql.insert(Decision, logged)


def describe(t):
    """The SLA part of a ticket's JSON."""
    return {
        "calendar": t.sla_calendar, "state": t.sla_state, "paused": t.sla_paused_at is not None,
        "escalation_level": t.escalation_level,
        "response": {"metric": t.response_metric, "warn_at": iso(t.response_warn_at),
                     "due_at": iso(t.response_due_at), "breached": t.response_breached},
        "resolution": {"warn_at": iso(t.resolution_warn_at), "due_at": iso(t.resolution_due_at),
                       "breached": t.resolution_breached},
        "first_response_at": iso(t.first_response_at),
    }

