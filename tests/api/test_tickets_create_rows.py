"""Ticket create writes exactly the rows it always did (batched inserts): history, notices, action runs, outbox."""
import copy
import dataclasses
import json
import threading
import uuid

from app.db import write_transaction
from app.models.core import IdempotencyRecord
from app.models.outbox import OutboxDelivery, OutboxMessage
from app.models.tickets import Ticket, TicketActionRun, TicketEvent, TicketNotice
from app.platform import outbox
from app.services import tickets
from app.services.tickets import policy as tickets_policy, routing as tickets_routing


def uid(prefix="x"):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def test_complaint_create_rows(http, db_conn):
    """投诉 enters ``new`` whose on_enter notifies the department: one run, one message before ticket.created."""
    hook, _ = outbox.create_webhook("rows", "http://127.0.0.1:9/x", topics="ticket.notify.*")
    try:
        key = uid("k")
        r = http.post("/v1/tickets", json={"category": "投诉", "title": "投诉客服态度", "user_id": uid("u"),
                                           "channel": "app"}, key=key)
        assert r.status_code == 201, r.text
        t = r.json()
    finally:
        outbox.deactivate_webhook(hook.id)
    tid = t["id"]
    events = list(TicketEvent.select().where(TicketEvent.ticket == tid).order_by(TicketEvent.id))
    assert [(e.kind, e.field, e.actor) for e in events] == [
        ("created", "state", t["created_by"]), ("routed", "department", "system:rules"),
        ("priority", "priority", "system:rules")]
    assert events[0].to_value == "new" and json.loads(events[0].detail) == {"category": "投诉", "source": "system"}
    assert events[1].to_value == f"{t['department']}/{t['queue']}" and events[1].rule == t["routing"]["rule"]
    assert json.loads(events[1].detail)["ruleset"] == "ticket_routing"
    assert events[2].to_value == t["priority"] and events[2].from_value is None
    assert all(e.at == events[0].at for e in events)
    notices = list(TicketNotice.select().where(TicketNotice.ticket == tid))
    assert [(n.kind, n.text, n.user_id) for n in notices] == [("created", "工单已创建：已受理", t["user"]["id"])]
    runs = list(TicketActionRun.select().where(TicketActionRun.ticket == tid))
    assert [(a.key, a.action, json.loads(a.result)) for a in runs] == [
        ("enter:new:0:0:notify", "notify", {"sent": ["department"]})]
    assert json.loads(runs[0].params) == {"action": "notify", "to": ["department"]}
    messages = list(OutboxMessage.select().where(OutboxMessage.subject == f"ticket:{tid}").order_by(OutboxMessage.id))
    assert [m.topic for m in messages] == ["ticket.notify.department", "ticket.created"]
    created = json.loads(messages[1].payload)
    assert created["ticket_id"] == tid and created["state"] == "new" and created["user_status"] == "已受理"
    assert json.loads(messages[0].payload)["target"] == "department"
    # one delivery, fanned out to the hook; dropped because the hook was deactivated above
    assert [(d.message_id, d.status) for d in OutboxDelivery.select().where(OutboxDelivery.webhook == hook.id)] == [
        (messages[0].id, "dropped")]
    row = Ticket.get_by_id(tid)
    assert (row.state, row.priority, row.department, row.sla_calendar) == (
        "new", t["priority"], t["department"], t["sla"]["calendar"])
    assert row.response_due_at.isoformat() + "Z" == t["sla"]["response"]["due_at"]
    assert IdempotencyRecord.get((IdempotencyRecord.key == key)).status_code == 201


def test_create_auto_actions_that_change_the_ticket_are_saved(app, db_conn):
    """An initial state whose on_enter changes the row just inserted (tag, priority) updates it in place."""
    cfg = tickets_policy.current()
    doc = copy.deepcopy(cfg.tickets)
    wf = doc["workflows"][doc["categories"]["发票"]["workflow"]]
    wf["states"][wf["initial"]]["on_enter"] = [{"action": "add_tag", "tag": "auto"},
                                               {"action": "set_priority", "priority": "P1"},
                                               {"action": "notify", "to": ["user"], "text": "已收到"}]
    patched = dataclasses.replace(cfg, tickets=doc, _sla_targets={})
    body = {"category": "发票", "title": "补开发票", "user_id": uid("u"), "channel": "web"}
    facts = tickets.facts_of(body)
    decision = tickets_routing.decide(facts, doc["default_priority"])
    with app.app_context(), write_transaction():
        out = tickets.operations._create({"kind": "api_key", "id": "tests", "scopes": frozenset()}, body, patched,
                                         facts, decision)
    row = Ticket.get_by_id(out["id"])
    assert row.priority == out["priority"] == "P1"
    assert json.loads(row.tags) == out["tags"] and "auto" in out["tags"]
    kinds = [e.kind for e in TicketEvent.select().where(TicketEvent.ticket == row.id).order_by(TicketEvent.id)]
    assert kinds == ["created", "routed", "priority", "priority"]
    assert [n.kind for n in TicketNotice.select().where(TicketNotice.ticket == row.id).order_by(TicketNotice.id)] \
        == ["created", "notice"]
    runs = [r.key for r in
            TicketActionRun.select().where(TicketActionRun.ticket == row.id).order_by(TicketActionRun.id)]
    initial = wf["initial"]
    assert runs == [f"enter:{initial}:0:0:add_tag", f"enter:{initial}:0:1:set_priority", f"enter:{initial}:0:2:notify"]


def test_concurrent_creates_with_one_key_make_one_ticket(server, admin_token):
    """Two requests racing with one Idempotency-Key: one ticket; the other is a replay of it."""
    from tests.conftest import Http
    key, body = uid("k"), {"category": "发票", "title": "并发", "user_id": uid("u"), "channel": "web"}
    results, barrier = [], threading.Barrier(4)

    def go():
        http = Http(server, admin_token)
        barrier.wait()
        r = http.post("/v1/tickets", json=body, key=key)
        results.append((r.status_code, r.json()["id"]))

    threads = [threading.Thread(target=go) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert {s for s, _ in results} == {201} and len({i for _, i in results}) == 1
    assert Ticket.select().where(Ticket.user_id == body["user_id"]).count() == 1
