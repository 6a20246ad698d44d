"""A priority change recomputes the running SLA clocks from that moment, with the new priority's targets."""
import datetime as dt

from app.db import write_transaction
from app.models.tickets import Ticket
from app.services.tickets import operations as tickets_svc
from app.services.tickets import policy as tickets_policy
from tests.api.test_tickets_api import create


def test_priority_change_recomputes_sla_targets_from_that_moment(http, db_conn):
    t = create(http, amount_fen=100, user={"level": "普通", "paid": False}, title="咨询", body="问一下")
    row = Ticket.get_by_id(t["id"])
    assert row.priority != "P1"
    old_due = row.resolution_due_at
    changed_at = row.created_at + dt.timedelta(minutes=10)
    cfg = tickets_policy.current()
    with write_transaction():
        row = Ticket.get_by_id(t["id"])
        tickets_svc.run_actions(cfg, row, [{"action": "set_priority", "priority": "P1"}], "test:priority",
                                "system:test", changed_at)
        row.save()
    row = Ticket.get_by_id(t["id"])
    cal, targets = cfg.sla_target(row.category, "P1")
    assert row.priority == "P1" and row.sla_calendar == cal == "always"
    assert row.response_due_at == changed_at + dt.timedelta(minutes=targets["first_response"])
    assert row.resolution_due_at == changed_at + dt.timedelta(minutes=targets["resolution"])
    assert row.resolution_due_at != old_due


def test_sla_state_is_read_from_the_clock_without_the_watcher(http, db_conn):
    """Hardening #9 item 13: a ticket past its warning / due instant reads ``warning`` / ``breached`` at once —
    on the ticket, in the list filter and in the stats — with no watcher tick run; the watcher only records it."""
    from app.models.tickets import TicketSlaEvent
    from app.platform import clock
    t = create(http, amount_fen=100, user={"level": "普通", "paid": False}, title="咨询", body="SLA read-time")
    row = Ticket.get_by_id(t["id"])
    assert t["sla"]["state"] == "ok"
    listed = lambda state: [i["id"] for i in http.get("/v1/tickets", params={"sla": state, "limit": 200}).json()["items"]]  # noqa: E731
    try:
        clock.set_now(row.response_warn_at + dt.timedelta(seconds=1))
        assert http.get(f"/v1/tickets/{t['id']}").json()["sla"]["state"] == "warning"
        assert t["id"] in listed("warning") and t["id"] not in listed("ok")
        warning_open = http.get("/v1/ticket-stats").json()["sla"]["warning_open"]
        assert warning_open >= 1
        clock.set_now(row.response_due_at + dt.timedelta(seconds=1))
        assert http.get(f"/v1/tickets/{t['id']}").json()["sla"]["state"] == "breached"
        assert t["id"] in listed("breached") and t["id"] not in listed("warning")
        assert http.get("/v1/ticket-stats").json()["sla"]["breached_open"] >= 1
        # nothing was materialised: no watcher ran
        assert TicketSlaEvent.select().where(TicketSlaEvent.ticket_id == t["id"]).count() == 0
        assert Ticket.get_by_id(t["id"]).sla_state == "ok"
    finally:
        clock.set_now(None)
