"""Service desk end to end over HTTP against the real server: the seed's three queueing rules, transfer,
priority, live events (SSE in order, resumable), complaints from chat, calls and reviews."""
import datetime as dt
import secrets

import pytest
import requests

from app.platform import clock
from tests.conftest import Http, make_token
from tests.service_factories import TEST_GROUPS, clean_floor, new_agent, read_sse, service_doc, service_policy


@pytest.fixture(scope="module")
def desk(app, server):
    groups = dict(service_doc(app)["groups"], **TEST_GROUPS)
    with service_policy(app, calendar="always", assignment="pull", heartbeat_seconds=1, groups=groups):
        yield


@pytest.fixture()
def floor(app, desk):
    clean_floor(app)
    clock.set_now(clock.now())  # frozen: a test moves time on purpose
    yield
    clock.set_now(None)
    clean_floor(app)


@pytest.fixture(scope="module")
def key(app):
    return make_token(["service:write", "act-as"], "service-tests")


@pytest.fixture()
def api(server, key):
    return Http(server, key)


def uid(prefix="u"):
    return f"{prefix}-{secrets.token_hex(4)}"


def ask(api, user_id, **kw):
    return api.post("/v1/service/conversations", json={"user_id": user_id, **kw})


def act(api, staff_no, method, path, json=None):
    return api.request(method, "/v1/service/agent" + path, json=json, headers={"Patron-Act-As": staff_no})


def advance(seconds):
    clock.set_now(clock.now() + dt.timedelta(seconds=seconds))


def online(api, staff_no, groups=None):
    r = act(api, staff_no, "POST", "/online", {"groups": groups} if groups else {})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "online" and r.json()["lock"] == "open"
    return r.json()


def take(api, staff_no):
    r = act(api, staff_no, "POST", "/take")
    assert r.status_code == 200, r.text
    return r.json()["conversation"]


def me(api, staff_no):
    r = act(api, staff_no, "GET", "")
    assert r.status_code == 200, r.text
    return r.json()


def stream(server, conv_id, token, last=None):
    headers = {"Last-Event-ID": str(last)} if last is not None else {}
    r = requests.get(f"{server}/v1/service/conversations/{conv_id}/stream", params={"token": token},
                     headers=headers, stream=True, timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/event-stream")
    return r


def _counts():
    from app.models.service import ServiceConversation, ServiceEvent
    return ServiceConversation.select().count(), ServiceEvent.select().count()


def test_rule1_queue_at_cap_refuses_at_once_and_creates_nothing(api, floor, db_conn):
    from app import policy
    from app.models.service import ServiceConversation
    from app.policy import decisions
    first, second, third = uid("cap"), uid("cap"), uid("cap")
    assert ask(api, first, group="tiny").status_code == 201
    assert ask(api, second, group="tiny").status_code == 201
    before = _counts()
    r = ask(api, third, group="tiny")
    assert r.status_code == 429, r.text
    body = r.json()
    assert r.headers["Content-Type"].startswith("application/problem+json")
    assert body["code"] == "queue-full" and body["queue_cap"] == 2 and body["queued"] == 2 and body["group"] == "tiny"
    assert "not added to the queue" in body["detail"]
    assert _counts() == before
    assert not ServiceConversation.select().where(ServiceConversation.user_id == third).exists()
    [d] = decisions.for_subject(f"service:user:{third}")
    assert d["rule"] == "groups.tiny.queue_cap" and d["outcome"]["refused"] == "queue-full"
    assert d["version"] == policy.active_version()
    # a place frees up: the next request is queued again
    conv = ServiceConversation.get(ServiceConversation.user_id == first)
    r = api.post(f"/v1/service/conversations/{conv.id}/leave", json={"user_id": first})
    assert r.status_code == 200 and r.json()["state"] == "closed"
    assert ask(api, third, group="tiny").status_code == 201


def test_rule1_outside_business_hours_is_refused(app, api, floor, db_conn):
    from app.models.service import ServiceConversation
    user = uid("closed")
    with service_policy(app, calendar="business"):
        clock.set_now(dt.datetime(2026, 12, 6, 4, 0))  # a Sunday in Shanghai
        r = ask(api, user)
    assert r.status_code == 409 and r.json()["code"] == "outside-business-hours"
    assert not ServiceConversation.select().where(ServiceConversation.user_id == user).exists()


def test_rule2_lock_closes_on_take_and_opens_when_finished(app, api, floor):
    a = new_agent(app)
    online(api, a)
    u1, u2 = uid(), uid()
    r1, r2 = ask(api, u1), ask(api, u2)
    assert r1.status_code == r2.status_code == 201
    c1 = take(api, a)
    assert c1["user_id"] == u1 and c1["state"] == "serving" and c1["agent"] == a
    view = me(api, a)
    assert view["lock"] == "closed" and [c["user_id"] for c in view["serving"]] == [u1]
    r = act(api, a, "POST", "/take")
    assert r.status_code == 409 and r.json()["code"] == "agent-locked"
    assert api.get(f"/v1/service/conversations/{r2.json()['conversation']['id']}").json()["state"] == "queued"
    assert act(api, a, "POST", f"/conversations/{c1['id']}/messages", {"type": "text", "text": "您好"}).status_code == 201
    assert api.post(f"/v1/service/conversations/{c1['id']}/messages",
                    json={"user_id": u1, "message": {"type": "order", "order_no": "O-1", "amount_fen": 100}}
                    ).status_code == 201
    r = act(api, a, "POST", f"/conversations/{c1['id']}/close", {"category": "咨询", "summary": "已解答"})
    assert r.status_code == 200 and r.json()["state"] == "closed" and r.json()["close_category"] == "咨询"
    assert me(api, a)["lock"] == "open"
    r = api.post(f"/v1/service/conversations/{c1['id']}/csat", json={"user_id": u1, "score": 5, "comment": "好"})
    assert r.status_code == 200 and r.json()["csat"]["score"] == 5
    assert api.post(f"/v1/service/conversations/{c1['id']}/csat", json={"user_id": u1, "score": 4}).status_code == 409
    assert take(api, a)["user_id"] == u2


def test_an_away_agent_keeps_its_user_and_is_offered_nobody_new(app, api, floor):
    a = new_agent(app)
    online(api, a)
    u1, u2 = uid(), uid()
    assert ask(api, u1).status_code == 201
    c1 = take(api, a)
    r = act(api, a, "POST", "/away")
    assert r.status_code == 200 and r.json()["status"] == "away"
    assert [c["user_id"] for c in r.json()["serving"]] == [u1]  # kept
    c2 = ask(api, u2).json()["conversation"]
    assert act(api, a, "POST", f"/conversations/{c1['id']}/close", {"category": "咨询"}).status_code == 200
    assert me(api, a)["lock"] == "open"
    r = act(api, a, "POST", "/take")
    assert r.status_code == 409 and r.json()["code"] == "agent-away"
    assert api.get(f"/v1/service/conversations/{c2['id']}").json()["state"] == "queued"
    online(api, a)
    assert take(api, a)["user_id"] == u2


def test_rule2_auto_assignment_offers_only_agents_whose_lock_is_open(app, api, floor):
    a = new_agent(app)
    with service_policy(app, assignment="auto"):
        online(api, a)
        u1, u2 = uid(), uid()
        c1 = ask(api, u1).json()["conversation"]
        assert c1["state"] == "serving" and c1["agent"] == a
        c2 = ask(api, u2).json()["conversation"]
        assert c2["state"] == "queued" and c2["queue"]["position"] == 1
        assert me(api, a)["lock"] == "closed"
        act(api, a, "POST", f"/conversations/{c1['id']}/close", {"category": "咨询"})
        view = me(api, a)
        assert view["lock"] == "closed" and [c["user_id"] for c in view["serving"]] == [u2]


def _serving(app, api, group=None, roles=("agent_l1",)):
    a = new_agent(app, roles=roles)
    online(api, a, [group] if group else None)
    user = uid()
    r = ask(api, user, group=group) if group else ask(api, user)
    assert r.status_code == 201, r.text
    conv = take(api, a)
    assert conv["user_id"] == user
    return a, user, conv, r.json()["user_token"]


def _user_told(server, conv, token, kind):
    resp = stream(server, conv["id"], token)
    try:
        return read_sse(resp, lambda e: e["event"] == kind)[-1]
    finally:
        resp.close()


def test_rule3_user_timeout_opens_lock_clears_list_and_tells_user(app, api, server, floor):
    a, user, conv, token = _serving(app, api)
    for _ in range(7):  # the agent keeps beating; the user says nothing for 140 s (> 120 s)
        advance(20)
        assert act(api, a, "POST", "/heartbeat").status_code == 200
    view = me(api, a)
    assert view["status"] == "online" and view["lock"] == "open" and view["serving"] == []
    ev = _user_told(server, conv, token, "closed")
    assert ev["data"]["body"]["reason"] == "user-timeout" and ev["data"]["body"]["next"] == "closed"
    assert api.get(f"/v1/service/conversations/{conv['id']}").json()["close_reason"] == "user-timeout"


def test_rule3_agent_timeout_opens_lock_clears_list_and_requeues_user(app, api, server, floor):
    a, user, conv, token = _serving(app, api)
    resp = stream(server, conv["id"], token)
    try:
        read_sse(resp, lambda e: e["event"] == "assigned")
        advance(31)  # no agent heartbeat for longer than agent_timeout_seconds; the user's stream finds out
        ev = read_sse(resp, lambda e: e["event"] == "requeued")[-1]
    finally:
        resp.close()
    body = ev["data"]["body"]
    assert body["reason"] == "agent-timeout" and body["next"] == "requeued" and body["queue"]["position"] == 1
    view = me(api, a)
    assert view["status"] == "offline" and view["lock"] == "open" and view["serving"] == []
    again = api.get(f"/v1/service/conversations/{conv['id']}").json()
    assert again["state"] == "queued" and again["agent"] is None and again["priority"] == conv["priority"] + 10
    assert act(api, a, "POST", "/heartbeat").json()["code"] == "agent-offline"


def test_rule3_agent_offline_opens_lock_and_tells_user(app, api, server, floor):
    a, user, conv, token = _serving(app, api)
    resp = stream(server, conv["id"], token)
    try:
        read_sse(resp, lambda e: e["event"] == "assigned")
        r = act(api, a, "POST", "/offline")
        assert r.status_code == 200
        ev = read_sse(resp, lambda e: e["event"] == "requeued")[-1]
    finally:
        resp.close()
    assert ev["data"]["body"]["reason"] == "agent-offline" and ev["data"]["body"]["next"] == "requeued"
    view = r.json()
    assert view["status"] == "offline" and view["lock"] == "open" and view["serving"] == []


def test_rule3_agent_offline_in_a_ticket_group_turns_the_user_into_a_ticket(app, api, server, floor, db_conn):
    from app.models.tickets import Ticket
    a, user, conv, token = _serving(app, api, group="dedicated", roles=("agent_l2",))
    act(api, a, "POST", "/offline")
    ev = _user_told(server, conv, token, "closed")
    body = ev["data"]["body"]
    assert body["next"] == "ticket" and body["ticket_id"]
    t = Ticket.get_by_id(body["ticket_id"])
    assert t.user_id == user and t.conversation_ref == f"/v1/service/conversations/{conv['id']}/transcript"
    after = api.get(f"/v1/service/conversations/{conv['id']}").json()
    assert after["ticket_id"] == t.id and after["complaint_id"]
    comp = api.get(f"/v1/service/complaints/{after['complaint_id']}").json()
    assert comp["user_id"] == user and comp["ticket_id"] == t.id and comp["source"] == "chat"


def test_user_heartbeats_keep_the_user_and_the_sweep_applies_the_timeouts_due(app, api, floor):
    a, user, conv, token = _serving(app, api)
    for _ in range(7):  # 140 s in all (> the 120 s user timeout): each heartbeat keeps the user served
        advance(20)
        assert act(api, a, "POST", "/heartbeat").status_code == 200
        r = api.post(f"/v1/service/conversations/{conv['id']}/heartbeat", json={"user_id": user})
        assert r.status_code == 200, r.text
        assert r.json()["state"] == "serving" and r.json()["agent"] == a
    r = api.post(f"/v1/service/conversations/{conv['id']}/heartbeat", json={"user_id": uid()})
    assert r.status_code == 404  # another user's conversation is not found
    again = ask(api, user)  # asking again while served answers the open conversation, with a new user token
    assert again.status_code == 200 and again.json()["conversation"]["id"] == conv["id"], again.text
    assert again.json()["user_token"] != token
    assert act(api, a, "POST", f"/conversations/{conv['id']}/close", {"category": "咨询"}).status_code == 200
    assert act(api, a, "POST", "/offline").status_code == 200
    # a queued user goes silent; nothing reads the conversation until the sweep (the job's work, by hand)
    waiting = ask(api, uid()).json()["conversation"]
    assert waiting["state"] == "queued"
    advance(121)
    sup = new_agent(app, ("supervisor",), "SW")
    assert api.post("/v1/service/sweep", headers={"Patron-Act-As": a}).status_code == 403  # an agent does not sweep
    r = api.post("/v1/service/sweep", headers={"Patron-Act-As": sup})
    assert r.status_code == 200, r.text
    assert r.json() == {"agents": 0, "users": 1, "assigned": 0}
    assert api.get(f"/v1/service/conversations/{waiting['id']}").json()["close_reason"] == "user-timeout"
    assert api.post("/v1/service/sweep", headers={"Patron-Act-As": sup}).json()["users"] == 0  # nothing due twice


def test_user_closed_connection_counts_as_offline_after_the_grace(app, api, server, floor):
    a, user, conv, token = _serving(app, api)
    resp = stream(server, conv["id"], token)
    read_sse(resp, lambda e: e["event"] == "assigned")
    resp.close()
    from app.models.service import ServiceConversation
    from app.db import db
    for _ in range(100):  # the server notices the closed connection on its next keep-alive write
        with app.app_context(), db.connection_context():
            if ServiceConversation.get_by_id(conv["id"]).user_left_at is not None:
                break
        import time
        time.sleep(0.1)
    else:
        pytest.fail("the server never noticed the closed connection")
    advance(16)
    assert act(api, a, "POST", "/heartbeat").status_code == 200
    assert me(api, a)["lock"] == "open"
    assert api.get(f"/v1/service/conversations/{conv['id']}").json()["close_reason"] == "user-disconnected"


def test_transfer_to_agent_and_to_group(app, api, floor):
    a, user, conv, token = _serving(app, api)
    b = new_agent(app)
    online(api, b)
    r = act(api, a, "POST", f"/conversations/{conv['id']}/transfer", {"to_agent": b, "note": "物流问题"})
    assert r.status_code == 200 and r.json()["agent"] == b
    assert me(api, a)["lock"] == "open" and me(api, b)["lock"] == "closed"
    r = act(api, a, "POST", f"/conversations/{conv['id']}/messages", {"type": "text", "text": "x"})
    assert r.status_code == 409 and r.json()["code"] == "not-your-conversation"
    c = new_agent(app)
    online(api, c)
    r = act(api, b, "POST", f"/conversations/{conv['id']}/transfer", {"to_agent": a})
    assert r.status_code == 200  # a's lock is open again
    r = act(api, a, "POST", f"/conversations/{conv['id']}/transfer", {"to_group": "vip"})
    assert r.status_code == 200 and r.json()["state"] == "queued" and r.json()["group"] == "vip"
    assert me(api, a)["lock"] == "open"
    assert take(api, c)["id"] == conv["id"]
    kinds = [d["rule"] for d in api.get(f"/v1/service/conversations/{conv['id']}/decisions").json()["items"]]
    assert kinds.count("transfer") == 3 and kinds.count("pull") == 2


def test_vip_goes_ahead_of_ordinary_users(app, api, floor):
    ordinary, vip = uid("plain"), uid("vip")
    c1 = ask(api, ordinary).json()["conversation"]
    assert c1["queue"]["position"] == 1 and c1["queue"]["estimated_wait_seconds"] > 0
    c2 = ask(api, vip, user={"level": "金牌"}).json()["conversation"]
    assert c2["priority"] > c1["priority"] and c2["priority_rule"] == "high_level"
    assert api.get(f"/v1/service/conversations/{c1['id']}").json()["queue"]["position"] == 2
    a = new_agent(app)
    online(api, a)
    assert take(api, a)["user_id"] == vip
    d = api.get(f"/v1/service/conversations/{c2['id']}/decisions").json()["items"]
    assert d[0]["ruleset"] == "service_priority" and d[0]["rule"] == "high_level"
    assert d[1]["rule"] == "pull" and d[1]["outcome"]["assigned_to"] == a


def test_a_paid_member_goes_ahead_of_a_gold_level_and_an_ordinary_user(app, api, floor):
    ordinary, gold, paid = uid("plain"), uid("gold"), uid("paid")
    c1 = ask(api, ordinary).json()["conversation"]
    c2 = ask(api, gold, user={"level": "金牌"}).json()["conversation"]
    c3 = ask(api, paid, user={"paid": True}).json()["conversation"]
    assert c3["priority_rule"] == "paid_member" and c3["priority"] > c2["priority"] > c1["priority"]
    assert c3["queue"]["position"] == 1
    assert api.get(f"/v1/service/conversations/{c1['id']}").json()["queue"]["position"] == 3
    a = new_agent(app)
    online(api, a)
    served = []
    for _ in range(3):
        c = take(api, a)
        served.append(c["user_id"])
        assert act(api, a, "POST", f"/conversations/{c['id']}/close", {"category": "咨询"}).status_code == 200
    assert served == [paid, gold, ordinary]


def test_sse_delivers_in_order_and_resumes_from_last_event_id(app, api, server, floor):
    a, user, conv, token = _serving(app, api)
    for i in range(5):
        act(api, a, "POST", f"/conversations/{conv['id']}/messages", {"type": "text", "text": f"第{i}条"})
    resp = stream(server, conv["id"], token)
    try:
        got = read_sse(resp, lambda e: e["data"]["body"].get("text") == "第4条")
        ids = [int(e["id"]) for e in got]
        assert ids == list(range(1, len(ids) + 1)) and [e["data"]["seq"] for e in got] == ids
        # live: a message sent while connected arrives next, in order
        act(api, a, "POST", f"/conversations/{conv['id']}/messages", {"type": "image", "image_ref": "oss://i/1.png"})
        [live] = read_sse(resp, lambda e: True)
        assert int(live["id"]) == ids[-1] + 1 and live["data"]["body"]["image_ref"] == "oss://i/1.png"
    finally:
        resp.close()
    resp = stream(server, conv["id"], token, last=3)
    try:
        again = read_sse(resp, lambda e: e["data"]["body"].get("type") == "image")
    finally:
        resp.close()
    assert [int(e["id"]) for e in again] == list(range(4, ids[-1] + 2))
    polled = requests.get(f"{server}/v1/service/conversations/{conv['id']}/events",
                          params={"token": token, "cursor": 3}, timeout=30).json()
    assert [e["seq"] for e in polled["items"]] == [int(e["id"]) for e in again]
    assert polled["next_cursor"] == again[-1]["data"]["seq"]
    # a page at a time: the cursor of a full page goes on from its last event; with nothing new it stays put
    one = requests.get(f"{server}/v1/service/conversations/{conv['id']}/events",
                       params={"token": token, "cursor": 3, "limit": 1}, timeout=30).json()
    assert [e["seq"] for e in one["items"]] == [4] and one["next_cursor"] == 4
    idle = requests.get(f"{server}/v1/service/conversations/{conv['id']}/events",
                        params={"token": token, "cursor": polled["next_cursor"]}, timeout=30).json()
    assert idle == {"items": [], "next_cursor": polled["next_cursor"]}
    assert requests.get(f"{server}/v1/service/conversations/{conv['id']}/events",
                        params={"token": "wrong"}, timeout=30).status_code == 401


def test_conversation_becomes_complaint_with_ticket_carrying_transcript(app, api, floor, db_conn):
    from app.models.tickets import Ticket
    a, user, conv, token = _serving(app, api)
    r = act(api, a, "POST", f"/conversations/{conv['id']}/ticket", {"category": "物流/配送", "summary": "快递丢件"})
    assert r.status_code == 201, r.text
    comp = r.json()
    t = Ticket.get_by_id(comp["ticket_id"])
    assert t.user_id == user and t.category == "物流/配送" and t.conversation_ref == comp["transcript_ref"]
    r2 = act(api, a, "POST", f"/conversations/{conv['id']}/ticket", {"category": "物流/配送"})
    assert r2.json()["id"] == comp["id"]  # one complaint, one ticket
    tr = api.get(comp["transcript_ref"]).json()
    assert tr["conversation"]["ticket_id"] == t.id and [e["kind"] for e in tr["events"]][-1] == "ticket"


def test_conversation_linked_to_an_existing_ticket_of_the_same_user(app, api, server, floor, db_conn):
    """An agent links the conversation to a ticket the user already has: no second ticket, the ticket now carries
    the transcript reference (and the link is in its history); another user's ticket or an unknown one is refused."""
    from app.models.tickets import Ticket
    tickets_api = Http(server, make_token(["tickets:write", "tickets:read"], "service-link-tests"))
    a, user, conv, token = _serving(app, api)
    r = tickets_api.post("/v1/tickets", json={"category": "物流/配送", "title": "快递一直没到", "user_id": user},
                         headers={"Idempotency-Key": f"link-{user}"})
    assert r.status_code == 201, r.text
    tid = r.json()["id"]
    assert Ticket.get_by_id(tid).conversation_ref is None
    other = tickets_api.post("/v1/tickets", json={"category": "物流/配送", "title": "别人的工单", "user_id": uid()},
                             headers={"Idempotency-Key": f"link-other-{user}"}).json()["id"]
    before = Ticket.select().count()
    r = act(api, a, "POST", f"/conversations/{conv['id']}/ticket", {"category": "物流/配送", "ticket_id": other})
    assert r.status_code == 409 and r.json()["type"].endswith("ticket-of-another-user"), r.text
    r = act(api, a, "POST", f"/conversations/{conv['id']}/ticket", {"category": "物流/配送", "ticket_id": 10 ** 9})
    assert r.status_code == 404, r.text
    r = act(api, a, "POST", f"/conversations/{conv['id']}/ticket", {"category": "物流/配送", "ticket_id": tid})
    assert r.status_code == 201, r.text
    comp = r.json()
    assert comp["ticket_id"] == tid and comp["user_id"] == user and comp["conversation_id"] == conv["id"]
    assert Ticket.select().count() == before  # linked, not created
    t = Ticket.get_by_id(tid)
    assert t.conversation_ref == comp["transcript_ref"]
    hist = tickets_api.get(f"/v1/tickets/{tid}/history").json()
    assert any(e["kind"] == "conversation_linked" for e in hist["items"]), hist
    view = api.get(f"/v1/service/conversations/{conv['id']}").json()
    assert view["ticket_id"] == tid and view["complaint_id"] == comp["id"]
    told = _user_told(server, conv, token, "ticket")
    assert told["data"]["body"]["ticket_id"] == tid
    assert api.get(f"/v1/service/complaints/{comp['id']}").json()["ticket_id"] == tid
    listed = api.get("/v1/service/complaints", params={"user_id": user}).json()
    assert [c["id"] for c in listed["items"]] == [comp["id"]] and listed["next_cursor"] is None
    first = api.get("/v1/service/complaints", params={"limit": 1}).json()
    second = api.get("/v1/service/complaints", params={"limit": 1, "cursor": first["next_cursor"]}).json()
    assert first["next_cursor"] == first["items"][0]["id"] > second["items"][0]["id"]  # newest first, none twice


def test_calls_open_and_update_a_complaint(app, api, floor):
    user = uid("caller")
    staff = new_agent(app)
    call = {"external_ref": uid("call"), "user_id": user, "staff_no": staff, "started_at": "2026-12-01T02:00:00Z",
            "duration_seconds": 300, "recording_ref": "oss://rec/1.wav", "summary": "投诉配送慢", "open_complaint": True,
            "category": "投诉"}
    r = api.post("/v1/service/calls", json=call)
    assert r.status_code == 201, r.text
    comp = r.json()["complaint"]
    assert comp["user_id"] == user and comp["ticket_id"] and comp["source"] == "call"
    assert api.post("/v1/service/calls", json=call).json()["id"] == r.json()["id"]  # same call, same record
    follow = dict(call, external_ref=uid("call"), open_complaint=False, complaint_id=comp["id"])
    r = api.post("/v1/service/calls", json=follow)
    assert r.status_code == 201 and r.json()["complaint"]["id"] == comp["id"], r.text
    assert len(r.json()["complaint"]["calls"]) == 2
    other = dict(follow, external_ref=uid("call"), user_id=uid("someone"))
    assert api.post("/v1/service/calls", json=other).json()["code"] == "complaint-of-another-user"


def test_reviews_open_complaints_by_rule(app, api, floor):
    low = {"external_ref": uid("rv"), "user_id": uid(), "rating": 1, "text": "太差了", "source": "o2o"}
    r = api.post("/v1/service/reviews", json=low)
    assert r.status_code == 201 and r.json()["rule"] == "very_low_rating" and r.json()["complaint"]["ticket_id"]
    fine = {"external_ref": uid("rv"), "user_id": uid(), "rating": 4, "text": "还行"}
    r = api.post("/v1/service/reviews", json=fine)
    assert r.status_code == 201 and r.json()["complaint"] is None
    vip = {"external_ref": uid("rv"), "user_id": uid(), "rating": 3, "text": "一般", "user": {"level": "钻石"}}
    assert api.post("/v1/service/reviews", json=vip).json()["rule"] == "vip_unhappy"
    words = {"external_ref": uid("rv"), "user_id": uid(), "rating": 5, "text": "不处理就打12315"}
    assert api.post("/v1/service/reviews", json=words).json()["complaint"]["category"] == "投诉"
    assert api.post("/v1/service/reviews", json=low).status_code == 200  # replay


def test_agent_routes_need_a_staff_identity(api, floor):
    r = api.post("/v1/service/agent/take")
    assert r.status_code == 403 and r.json()["code"] == "staff-required"


def test_readyz_reports_fanout(server):
    r = requests.get(server + "/readyz", timeout=30)
    assert r.status_code == 200 and r.json()["checks"]["service_fanout"] in ("local", "redis")


def test_readyz_warns_when_several_processes_stream_without_redis(app, server, db_conn, monkeypatch):
    """Several processes need Redis for live fan-out: /readyz says so when it sees another local-mode process."""
    from app.models.service import ServiceNode
    from app.services.service import live
    monkeypatch.setitem(app.config, "REDIS_URL", None)
    live.touch_node(force=True)
    ServiceNode.delete().where(ServiceNode.node_id != live.NODE_ID).execute()
    assert requests.get(server + "/readyz", timeout=30).json()["checks"]["service_fanout"] == "local"
    other = f"other-process-{secrets.token_hex(3)}"
    ServiceNode.insert(node_id=other, mode="local", seen_at=clock.now()).execute()
    try:
        fanout = requests.get(server + "/readyz", timeout=30).json()["checks"]["service_fanout"]
        assert fanout.startswith("warning: 2 processes") and "PATRON_REDIS_URL" in fanout, fanout
    finally:
        ServiceNode.delete().where(ServiceNode.node_id == other).execute()


def test_membership_service_benefit_sends_a_diamond_member_to_the_dedicated_queue(app, api, floor, db_conn):
    from app.services.membership import events
    member = uid("diamond")
    events.ingest({"event_id": uid("ev"), "member_id": member, "type": "order_paid", "amount_fen": 3_500_000,
                   "order_ref": uid("o"), "channel": "app"}, "tests")
    c = ask(api, member).json()["conversation"]
    assert c["group"] == "dedicated" and c["priority_rule"] == "dedicated_agent" and c["priority"] == 90
    d = api.get(f"/v1/service/conversations/{c['id']}/decisions").json()["items"][0]
    assert d["inputs"]["benefit"]["dedicated_agent"] is True and d["inputs"]["user"]["source"] == "membership"


def test_agent_stream_delivers_and_its_closed_connection_counts_as_offline(app, api, server, floor, key):
    import time
    from app.db import db
    from app.models.service import ServiceAgent
    a = new_agent(app)
    online(api, a)
    resp = requests.get(f"{server}/v1/service/agent/stream", stream=True, timeout=30,
                        headers={"Authorization": f"Bearer {key}", "Patron-Act-As": a})
    assert resp.status_code == 200
    user = uid()
    r = ask(api, user)
    conv = take(api, a)
    api.post(f"/v1/service/conversations/{conv['id']}/messages", json={"user_id": user,
                                                                       "message": {"type": "text", "text": "在吗"}})
    got = read_sse(resp, lambda e: e["event"] == "message")
    assert [e["event"] for e in got] == ["assigned", "message"] and got[1]["data"]["body"]["text"] == "在吗"
    # the polling fallback pages the same events, oldest first
    ids = [int(e["id"]) for e in got]
    polled = act(api, a, "GET", "/events").json()
    assert [e["id"] for e in polled["items"]] == ids and polled["next_cursor"] == ids[-1]
    one = act(api, a, "GET", "/events?limit=1").json()
    assert [e["id"] for e in one["items"]] == ids[:1] and one["next_cursor"] == ids[0]
    rest = act(api, a, "GET", f"/events?cursor={ids[0]}").json()
    assert [e["id"] for e in rest["items"]] == ids[1:]
    assert act(api, a, "GET", f"/events?cursor={ids[-1]}").json() == {"items": [], "next_cursor": ids[-1]}
    resp.close()
    for _ in range(100):  # the server notices the closed connection on its next keep-alive write
        with app.app_context(), db.connection_context():
            if ServiceAgent.get(ServiceAgent.staff_no == a).left_at is not None:
                break
        time.sleep(0.1)
    else:
        pytest.fail("the server never noticed the agent's closed connection")
    advance(16)  # past the reconnect grace, well before the heartbeat timeout
    ev = _user_told(server, conv, r.json()["user_token"], "requeued")
    assert ev["data"]["body"]["reason"] == "agent-disconnected"
    assert me(api, a)["status"] == "offline"
