"""SLA watcher: stall warning then escalation, each exactly once across ticks and concurrent workers."""
import datetime as dt
import json
import threading
import uuid

import pytest


from app.platform import clock
from app.models.outbox import OutboxMessage
from app.models.staff import Staff
from app.models.tickets import Ticket, TicketEvent, TicketSlaEvent
from app.services.tickets import policy as tickets_policy, sla as tickets_sla


def make_ticket(created_ago_minutes=13, response_minutes=15, resolution_minutes=240, priority="P2",
                department="finance", user_id=None, calendar="always"):
    """A ticket row whose clocks run on the 24x7 calendar, started ``created_ago_minutes`` ago."""
    cfg = tickets_policy.current()
    now = clock.now()
    created = now - dt.timedelta(minutes=created_ago_minutes)
    t = Ticket(category="退款争议", workflow="refund_dispute", state="investigating", title="SLA test",
               channel="app", source="system", user_id=user_id or f"u-{uuid.uuid4().hex[:8]}",
               department=department, queue="refund-disputes", priority=priority, created_by="tests",
               created_at=created, updated_at=created, policy_version=cfg.version, sla_calendar=calendar)
    tickets_sla._start_response(cfg, t, created, "first_response", response_minutes)
    tickets_sla._start_resolution(cfg, t, created, resolution_minutes)
    t.save()
    return t


def sla_rows(ticket_id):
    return sorted((e.kind, e.metric) for e in TicketSlaEvent.select().where(TicketSlaEvent.ticket_id == ticket_id))


def run_concurrently(app, fn, workers=2):
    """Run fn() in ``workers`` threads at once, each with its own app context and connection."""
    from app.db import db
    barrier = threading.Barrier(workers)
    results, errors = [], []

    def worker():
        with app.app_context():
            try:
                with db.connection_context():
                    barrier.wait()
                    results.append(fn())
            except Exception as exc:  # noqa: BLE001 - surfaced by the assertion below
                errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not errors, errors
    return results


def test_warning_then_escalation_exactly_once_with_two_workers(app, db_conn):
    supervisor = f"sup-{uuid.uuid4().hex[:8]}"
    t = make_ticket(created_ago_minutes=13)  # response warns at 12 min, breaches at 15 min
    # a supervisor of the department exists, so escalation reassigns to one
    Staff.create(staff_no=supervisor, name="主管", department="finance", roles=" supervisor ")
    now1 = clock.now()
    for _ in range(3):  # three ticks, each on two workers
        run_concurrently(app, lambda: tickets_sla.watch(now=now1))
    assert sla_rows(t.id) == [("warning", "first_response")]
    t = Ticket.get_by_id(t.id)
    assert t.sla_state == "warning" and t.priority == "P2" and t.response_check_at == t.response_due_at

    now2 = now1 + dt.timedelta(minutes=3)
    for _ in range(3):
        run_concurrently(app, lambda: tickets_sla.watch(now=now2))
    assert sla_rows(t.id) == [("breach", "first_response"), ("warning", "first_response")]
    t = Ticket.get_by_id(t.id)
    assert t.sla_state == "breached" and t.response_breached and t.escalation_level == 1
    assert t.priority == "P1"  # raised exactly one step
    assignee = Staff.get(Staff.staff_no == t.assignee)
    assert "supervisor" in assignee.role_list and assignee.department == "finance"
    assert t.response_check_at is None
    kinds = [e.kind for e in TicketEvent.select().where(TicketEvent.ticket == t.id).order_by(TicketEvent.id)]
    assert kinds.count("sla_warning") == 1 and kinds.count("sla_escalation") == 1
    esc = TicketEvent.get((TicketEvent.ticket == t.id) & (TicketEvent.kind == "sla_escalation"))
    assert esc.policy_version == tickets_policy.current().version and esc.rule == "sla.escalation"
    topics = [m.topic for m in OutboxMessage.select().where(OutboxMessage.subject == f"ticket:{t.id}")]
    assert sorted(topics) == ["ticket.escalated", "ticket.sla_warning"]


def test_missed_warning_window_escalates_directly(app, db_conn):
    t = make_ticket(created_ago_minutes=20)
    tickets_sla.watch(now=clock.now())
    assert sla_rows(t.id) == [("breach", "first_response")]


def test_resolution_clock_and_paused_tickets(app, db_conn):
    t = make_ticket(created_ago_minutes=230, response_minutes=100000, resolution_minutes=240)
    paused = make_ticket(created_ago_minutes=230, response_minutes=100000, resolution_minutes=240)
    Ticket.update(sla_paused_at=clock.now()).where(Ticket.id == paused.id).execute()
    tickets_sla.watch(now=clock.now())
    assert sla_rows(t.id) == [("warning", "resolution")]
    assert sla_rows(paused.id) == []


def test_resume_moves_deadlines_by_paused_business_time(app, db_conn):
    cfg = tickets_policy.current()
    t = make_ticket(created_ago_minutes=0, response_minutes=60, resolution_minutes=240)
    due_before = t.resolution_due_at
    paused_at = t.created_at + dt.timedelta(minutes=10)
    tickets_sla.pause(t, paused_at)
    tickets_sla.resume(cfg, t, paused_at + dt.timedelta(minutes=45))
    assert t.resolution_due_at == due_before + dt.timedelta(minutes=45)
    assert t.sla_paused_at is None


def test_responded_stops_response_clock(app, db_conn):
    t = make_ticket(created_ago_minutes=5)
    tickets_sla.responded(t, clock.now())
    t.save()
    assert t.first_response_at is not None and t.response_check_at is None and not t.response_breached
    tickets_sla.watch(now=clock.now() + dt.timedelta(minutes=20))
    assert ("breach", "first_response") not in sla_rows(t.id)


@pytest.mark.parametrize("rounds", [1])
def test_job_function_runs_a_tick(app, db_conn, rounds):
    import jobs.tickets
    result = jobs.tickets.sla_watch()
    assert set(result) >= {"warnings", "breaches"}
    assert ("jobs.tickets.sla_watch", "* * * * *") in jobs.tickets.PERIODIC
    json.dumps(result)


def test_ticket_clocks_use_the_policy_calendar(app, db_conn):
    """A P3 ticket opened Friday 17:00 (Shanghai): first response 120 business minutes, resolution 1440."""
    cfg = tickets_policy.current()
    opened = dt.datetime(2026, 11, 27, 9, 0)  # Fri 17:00 +08:00
    t = Ticket(category="账户/会员", priority="P3")
    tickets_sla.start(cfg, t, opened)
    local = dt.timedelta(hours=8)
    assert t.sla_calendar == "business"
    assert t.response_warn_at + local == dt.datetime(2026, 11, 30, 9, 36)  # 96 min: 1 h Fri + 36 min Mon
    assert t.response_due_at + local == dt.datetime(2026, 11, 30, 10, 0)
    # 24 business hours: Fri 1 h, Mon-Wed 7.5 h each, Thu 30 min
    assert t.resolution_due_at + local == dt.datetime(2026, 12, 3, 9, 30)
    assert t.response_check_at == t.response_warn_at
