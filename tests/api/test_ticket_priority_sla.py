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
