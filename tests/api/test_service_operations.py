"""Service operations over HTTP against the real server: the real-time floor (JSON, SSE, gauges), statistics of a
scripted day asserted exactly (JSON and CSV bytes), and alert episodes (raised once, recovered once, one webhook
each) for a scripted spike. Time is scripted with app.platform.clock; nothing sleeps."""
import datetime as dt
import json
import re
import secrets

import pytest
import requests

from app.platform import clock
from tests.api.test_outbox import Receiver
from tests.conftest import Http, make_token
from tests.service_factories import clean_floor, new_agent, policy_variant, read_sse, service_doc

OPS = {"name": "运营监控测试组", "department": "cs", "roles": ["agent_l1"], "queue_cap": 2,
       "on_agent_timeout": "requeue", "on_user_timeout": "close", "requeue_boost": 10, "ticket_category": "投诉"}


@pytest.fixture(scope="module")
def ops_policy(app, server):
    # one skill group per test: tickets and agents of one test never count on another's floor
    groups = dict(service_doc(app)["groups"], ops=OPS, fl=OPS, sp=dict(OPS, queue_cap=10))
    with policy_variant(app, {"service.yaml": {"calendar": "always", "assignment": "pull", "bot.enabled": False,
                                               "agent_timeout_seconds": 3600, "user_timeout_seconds": 3600,
                                               "groups": groups},
                              "monitoring.yaml": {"alerts.groups": {"sp": {"queue_length": 3,
                                                                           "abandonment_rate_percent": 100}},
                                                  "alerts.recover_below_percent": 80}}):
        yield


@pytest.fixture()
def scripted(app, ops_policy):
    clean_floor(app)
    yield
    clock.set_now(None)
    clean_floor(app)


@pytest.fixture(scope="module")
def api(app):
    return make_token(["service:write", "ledger:read", "act-as"], "operations-tests")


@pytest.fixture()
def svc(server, api):
    return Http(server, api)


def at(text):
    clock.set_now(dt.datetime.fromisoformat(text))


def advance(seconds):
    clock.set_now(clock.now() + dt.timedelta(seconds=seconds))


def uid(prefix="ou"):
    return f"{prefix}-{secrets.token_hex(4)}"


def ask(svc, user_id, channel="app", expect=201, group="ops"):
    r = svc.post("/v1/service/conversations", json={"user_id": user_id, "group": group, "channel": channel})
    assert r.status_code == expect, r.text
    return r.json().get("conversation")


def act(svc, staff_no, method, path, json=None, **headers):
    return svc.request(method, "/v1/service/agent" + path, json=json, headers={"Patron-Act-As": staff_no, **headers})


def ok(r, status=200):
    assert r.status_code == status, r.text
    return r.json()


def online(svc, staff_no, group="ops"):
    return ok(act(svc, staff_no, "POST", "/online", {"groups": [group]}))


def take(svc, staff_no):
    return ok(act(svc, staff_no, "POST", "/take"))["conversation"]


def say(svc, staff_no, conv_id, text="您好"):
    ok(act(svc, staff_no, "POST", f"/conversations/{conv_id}/messages", {"type": "text", "text": text}), 201)


def close(svc, staff_no, conv_id):
    return ok(act(svc, staff_no, "POST", f"/conversations/{conv_id}/close", {"category": "咨询", "summary": "已解决"}))


def leave(svc, conv):
    return ok(svc.post(f"/v1/service/conversations/{conv['id']}/leave", json={"user_id": conv["user_id"]}))


def ops_group(view, code="ops"):
    [g] = [g for g in view["groups"] if g["group"] == code]
    return g


# --- statistics -----------------------------------------------------------------------------------

def test_statistics_of_a_scripted_day_json_and_csv(app, svc, scripted):
    a, b = new_agent(app, prefix="OPA"), new_agent(app, prefix="OPB")
    at("2026-03-10T01:00:00")  # 09:00 in Asia/Shanghai, the service calendar's zone
    online(svc, a)
    online(svc, b)
    u1, u2, u3, u4, u5 = (uid() for _ in range(5))
    c1 = ask(svc, u1)  # t=0
    advance(30)
    assert take(svc, a)["id"] == c1["id"]  # t=30
    advance(20)
    say(svc, a, c1["id"])  # t=50: first response 50 s after queue entry
    advance(10)
    c2 = ask(svc, u2, channel="web")  # t=60
    advance(30)
    assert take(svc, b)["id"] == c2["id"]  # t=90
    advance(60)
    say(svc, b, c2["id"])  # t=150: first response 90 s
    r = svc.post("/v1/service/compensations", json={"user_id": u1, "amount_fen": 500, "reason": "delivery_delay",
                                                    "conversation_id": c1["id"]},
                 headers={"Patron-Act-As": a, "Idempotency-Key": uid("comp")})
    assert r.status_code == 201 and r.json()["state"] == "paid", r.text
    advance(180)
    close(svc, a, c1["id"])  # t=330: handled 300 s
    ok(svc.post(f"/v1/service/conversations/{c1['id']}/csat", json={"user_id": u1, "score": 5}))
    advance(70)
    ok(act(svc, b, "POST", f"/conversations/{c2['id']}/transfer", {"to_agent": a}))  # t=400
    advance(20)
    say(svc, a, c2["id"])  # t=420 (not the first response any more)
    advance(180)
    close(svc, a, c2["id"])  # t=600: handled from the first assignment (t=90): 510 s
    advance(100)
    c3 = ask(svc, u3)  # t=700
    advance(60)
    leave(svc, c3)  # t=760: abandoned while queued
    advance(40)
    c4 = ask(svc, u4)  # t=800
    advance(20)
    assert take(svc, b)["id"] == c4["id"]  # t=820
    advance(60)
    say(svc, b, c4["id"])  # t=880: first response 80 s
    advance(20)
    ok(act(svc, b, "POST", f"/conversations/{c4['id']}/ticket", {"category": "投诉", "summary": "需要售后跟进"}), 201)
    advance(100)
    close(svc, b, c4["id"])  # t=1000: handled 180 s
    ok(svc.post(f"/v1/service/conversations/{c4['id']}/csat", json={"user_id": u4, "score": 3}))
    at("2026-03-10T16:30:00")  # 00:30 of the next business day in Shanghai
    c5 = ask(svc, u5, channel="h5")
    advance(60)
    leave(svc, c5)

    def row(agent, channel, **kw):
        base = {"day": "2026-03-10", "agent": agent, "group": "ops", "channel": channel, "conversations": 1,
                "served": 1, "first_response_avg_seconds": None, "handling_avg_seconds": None, "abandoned": 0,
                "abandonment_rate_percent": 0.0, "transferred": 0, "transfer_rate_percent": 0.0, "csat_count": 0,
                "csat_avg": None, "compensation_fen": 0, "tickets_opened": 0, "qa_score": None}
        base.update(kw)
        return base

    expected = [
        row("", "app", served=0, abandoned=1, abandonment_rate_percent=100.0),
        row(a, "app", first_response_avg_seconds=50.0, handling_avg_seconds=300.0, csat_count=1, csat_avg=5.0,
            compensation_fen=500),
        row(a, "web", first_response_avg_seconds=90.0, handling_avg_seconds=510.0, transferred=1,
            transfer_rate_percent=100.0),
        row(b, "app", first_response_avg_seconds=80.0, handling_avg_seconds=180.0, csat_count=1, csat_avg=3.0,
            tickets_opened=1),
    ]
    got = ok(svc.get("/v1/service/stats", params={"from": "2026-03-10", "to": "2026-03-10", "group": "ops"}))
    assert got["items"] == expected
    assert got["from"] == got["to"] == "2026-03-10" and got["timezone"] == "Asia/Shanghai"
    assert got["by"] == ["agent", "group", "channel"] and got["columns"] == list(expected[0])
    assert got["totals"] == {"day": None, "agent": None, "group": None, "channel": None, "conversations": 4,
                             "served": 3, "first_response_avg_seconds": 73.3, "handling_avg_seconds": 330.0,
                             "abandoned": 1, "abandonment_rate_percent": 25.0, "transferred": 1,
                             "transfer_rate_percent": 25.0, "csat_count": 2, "csat_avg": 4.0, "compensation_fen": 500,
                             "tickets_opened": 1, "qa_score": None}

    # by group only, over both days: the 00:30 (Shanghai) conversation is the next business day
    got = ok(svc.get("/v1/service/stats", params={"from": "2026-03-10", "to": "2026-03-11", "group": "ops",
                                                   "by": "group"}))
    day1 = row(None, None, conversations=4, served=3, first_response_avg_seconds=73.3, handling_avg_seconds=330.0,
               abandoned=1, abandonment_rate_percent=25.0, transferred=1, transfer_rate_percent=25.0, csat_count=2,
               csat_avg=4.0, compensation_fen=500, tickets_opened=1)
    day2 = row(None, None, day="2026-03-11", served=0, abandoned=1, abandonment_rate_percent=100.0)
    assert got["items"] == [day1, day2]

    # CSV: the same rows, UTF-8 with BOM, CRLF, empty cells for None
    r = svc.get("/v1/service/stats", params={"from": "2026-03-10", "to": "2026-03-10", "group": "ops",
                                              "format": "csv"})
    assert r.status_code == 200 and r.headers["Content-Type"] == "text/csv; charset=utf-8"

    def line(values):
        return ",".join("" if v is None else str(v) for v in values) + "\r\n"

    header = ("day,agent,group,channel,conversations,served,first_response_avg_seconds,handling_avg_seconds,"
              "abandoned,abandonment_rate_percent,transferred,transfer_rate_percent,csat_count,csat_avg,"
              "compensation_fen,tickets_opened,qa_score\r\n")
    assert r.content == ("\ufeff" + header + "".join(line(e.values()) for e in expected)).encode("utf-8")
    assert r.content.startswith(b"\xef\xbb\xbfday,agent,")
    assert r.content.split(b"\r\n")[2] == f"2026-03-10,{a},ops,app,1,1,50.0,300.0,0,0.0,0,0.0,1,5.0,500,0,".encode()


def test_statistics_query_is_validated(svc, scripted):
    r = svc.get("/v1/service/stats", params={"from": "2026-02-30", "to": "x", "by": "agent,day", "group": "nope",
                                              "format": "xml"})
    assert r.status_code == 422 and r.json()["code"] == "validation-failed"
    r = svc.get("/v1/service/stats", params={"from": "2026-02-30", "to": "x", "by": "agent,day", "group": "nope"})
    assert r.status_code == 422
    assert sorted(e["pointer"] for e in r.json()["errors"]) == ["/query/by", "/query/from", "/query/group",
                                                                "/query/to"]
    r = svc.get("/v1/service/stats", params={"from": "2026-03-10", "to": "2026-03-09"})
    assert r.status_code == 422 and [e["pointer"] for e in r.json()["errors"]] == ["/query/to"]
    r = svc.get("/v1/service/stats", params={"from": "2024-01-01", "to": "2026-03-09"})
    assert r.status_code == 422 and "at most" in r.json()["errors"][0]["message"]


# --- the floor ------------------------------------------------------------------------------------

def test_floor_numbers_for_a_scripted_state(app, svc, server, http, scripted):
    a, b, c, d = (new_agent(app, prefix=p) for p in ("FLA", "FLB", "FLC", "FLD"))
    at("2026-04-07T01:00:00")
    online(svc, d, "fl")
    advance(3601)  # d's heartbeats stopped an hour ago: offline at read time, before any sweep
    for s in (a, b, c):
        online(svc, s, "fl")
    ok(act(svc, b, "POST", "/away"))
    ok(act(svc, c, "POST", "/offline"))
    c0 = ask(svc, uid(), group="fl")
    advance(5)
    assert take(svc, a)["id"] == c0["id"]
    close(svc, a, c0["id"])  # handled today: 1
    u1 = ask(svc, uid(), group="fl")  # t=0
    advance(10)
    u2 = ask(svc, uid(), group="fl")  # t=10
    advance(10)
    assert take(svc, a)["id"] == u1["id"]  # t=20
    advance(10)
    u3 = ask(svc, uid(), group="fl")  # t=30 (queue: u2, u3)
    advance(10)
    r = svc.post("/v1/service/conversations", json={"user_id": uid(), "group": "fl"})  # t=40: refused by the cap
    assert r.status_code == 429 and r.json()["code"] == "queue-full"
    advance(10)
    leave(svc, u2)  # t=50: abandoned while queued
    advance(10)
    ask(svc, uid(), group="fl")  # t=60 (queue: u3, u5)
    advance(30)  # t=90: u3 waited 60 s, u5 30 s
    ok(act(svc, a, "POST", f"/conversations/{u1['id']}/ticket", {"category": "投诉"}), 201)

    view = ok(svc.get("/v1/service/floor"))
    g = ops_group(view, "fl")
    assert {k: g[k] for k in ("queue_cap", "queue_length", "longest_wait_seconds", "average_wait_seconds", "agents",
                              "serving", "agents_locked", "refused_recent", "requests_recent",
                              "refusal_rate_percent", "abandoned_recent", "abandonment_rate_percent",
                              "sla_at_risk", "sla_breached")} == {
        "queue_cap": 2, "queue_length": 2, "longest_wait_seconds": 60, "average_wait_seconds": 45.0,
        "agents": {"online": 0, "serving": 1, "away": 1, "offline": 2}, "serving": 1, "agents_locked": 1,
        # in the 15-minute window: c0, u1, u2, u3, u5 entered the queue, one more was refused
        "refused_recent": 1, "requests_recent": 6, "refusal_rate_percent": round(100 / 6, 1),
        "abandoned_recent": 1, "abandonment_rate_percent": 20.0, "sla_at_risk": 0, "sla_breached": 0}
    agents = {x["staff_no"]: x for x in view["agents"]}
    assert {s: (agents[s]["state"], agents[s]["current_conversation"], agents[s]["handled_today"])
            for s in (a, b, c, d)} == {a: ("serving", u1["id"], 1), b: ("away", None, 0), c: ("offline", None, 0),
                                       d: ("offline", None, 0)}
    assert view["business_date"] == "2026-04-07" and view["window_minutes"] == 15

    # SLA at risk: the ticket's clocks, read from the tickets API, decide (computed when read, no watcher)
    ticket_id = ok(svc.get(f"/v1/service/conversations/{u1['id']}"))["ticket_id"]
    ticket = ok(http.get(f"/v1/tickets/{ticket_id}"))
    sla = ticket["sla"]
    warns = [sla[k]["warn_at"] for k in ("response", "resolution") if sla[k]["warn_at"]]
    dues = [sla[k]["due_at"] for k in ("response", "resolution") if sla[k]["due_at"]]
    parse = lambda s: dt.datetime.fromisoformat(s.replace("Z", ""))  # noqa: E731
    clock.set_now(min(parse(w) for w in warns) + dt.timedelta(seconds=1))
    g = ops_group(ok(svc.get("/v1/service/floor")), "fl")
    assert (g["sla_at_risk"], g["sla_breached"]) == (1, 0)
    clock.set_now(min(parse(x) for x in dues) + dt.timedelta(seconds=1))
    g = ops_group(ok(svc.get("/v1/service/floor")), "fl")
    assert (g["sla_at_risk"], g["sla_breached"]) == (0, 1)

    # the permission: an agent without service.floor.view is refused; a supervisor may look
    r = svc.get("/v1/service/floor", headers={"Patron-Act-As": a})
    assert r.status_code == 403 and r.json()["required_permission"] == ["service.floor.view", "service.supervise"]
    boss = new_agent(app, roles=("supervisor",), prefix="FLS")
    assert svc.get("/v1/service/floor", headers={"Patron-Act-As": boss}).status_code == 200


def test_floor_stream_delivers_an_update(app, svc, server, api, scripted):
    at("2026-04-08T02:00:00")
    resp = requests.get(f"{server}/v1/service/floor/stream", headers={"Authorization": f"Bearer {api}"},
                        stream=True, timeout=30)
    try:
        assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
        [first] = read_sse(resp, lambda e: True)
        assert first["event"] == "floor" and ops_group(first["data"])["queue_length"] == 0
        conv = ask(svc, uid())
        got = read_sse(resp, lambda e: ops_group(e["data"])["queue_length"] == 1)
        assert got[-1]["event"] == "floor" and int(got[-1]["id"]) > int(first["id"])
        assert ops_group(got[-1]["data"])["longest_wait_seconds"] == 0
        leave(svc, conv)
        got = read_sse(resp, lambda e: ops_group(e["data"])["queue_length"] == 0)
        assert ops_group(got[-1]["data"])["abandoned_recent"] == 1
    finally:
        resp.close()


# --- alerts ---------------------------------------------------------------------------------------

def _metric(text, name, **labels):
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        m = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if m and ",".join(sorted(m[1].split(","))) == want:
            return float(m[2])
    return None


def test_alert_raised_once_and_recovered_once_for_a_spike(app, svc, server, http, scripted, db_conn):
    from app import policy
    from app.platform import outbox
    receiver = Receiver(fail=0)
    hook = ok(http.post("/v1/webhooks", json={"name": "ops-alerts", "url": receiver.url,
                                               "topics": "service.alert.*"}), 201)
    try:
        at("2026-04-09T02:00:00")

        def evaluate():
            return ok(svc.post("/v1/service/alerts/evaluate"))

        def ops_alerts(out, key):
            return [x for x in out[key] if x["scope"] == "sp"]

        assert ops_alerts(evaluate(), "opened") == []
        convs = []
        version = policy.active_version()
        for _ in range(3):
            convs.append(ask(svc, uid(), group="sp"))
            advance(10)
        opened = ops_alerts(evaluate(), "opened")
        assert [(x["metric"], x["rule"], x["value"], x["threshold"], x["policy_version"]) for x in opened] == [
            ("queue_length", "alerts.groups.sp.queue_length", 3, 3, version)]
        alert_id = opened[0]["id"]
        for _ in range(2):
            advance(60)
            out = evaluate()
            assert ops_alerts(out, "opened") == [] and ops_alerts(out, "recovered") == []
        convs.append(ask(svc, uid(), group="sp"))  # the spike grows: still the same episode
        out = evaluate()
        assert ops_alerts(out, "opened") == [] and ops_alerts(out, "recovered") == []
        metrics = requests.get(f"{server}/metrics", timeout=30).text
        assert _metric(metrics, "patron_service_queue_length", group="sp") == 4.0
        assert _metric(metrics, "patron_service_longest_wait_seconds", group="sp") == 150.0
        assert _metric(metrics, "patron_service_agents", group="sp", state="online") == 0.0
        leave(svc, convs.pop())  # 3 waiting: under the peak, not under 80% of the threshold (hysteresis)
        out = evaluate()
        assert ops_alerts(out, "opened") == [] and ops_alerts(out, "recovered") == []
        leave(svc, convs.pop())  # 2 waiting: at most 80% of 3 -> recovered
        out = evaluate()
        assert [x["id"] for x in ops_alerts(out, "recovered")] == [alert_id]
        advance(60)
        out = evaluate()
        assert ops_alerts(out, "opened") == [] and ops_alerts(out, "recovered") == []
        alert = ok(svc.get(f"/v1/service/alerts/{alert_id}"))
        assert (alert["state"], alert["value"], alert["peak"], alert["last_value"], alert["threshold"]) == \
            ("recovered", 3, 4, 2, 3)
        assert alert["opened_at"] == "2026-04-09T02:00:30Z" and alert["recovered_at"] == "2026-04-09T02:02:30Z"
        listed = ok(svc.get("/v1/service/alerts", params={"state": "recovered"}))["items"]
        assert alert_id in [x["id"] for x in listed]

        outbox.deliver_due()
        mine = [json.loads(body) for _, body in receiver.requests]
        mine = [m for m in mine if m["data"].get("scope") == "sp"]
        assert [(m["topic"], m["data"]["id"], m["data"]["state"]) for m in mine] == [
            ("service.alert.opened", alert_id, "open"), ("service.alert.recovered", alert_id, "recovered")]
        assert mine[0]["data"]["rule"] == "alerts.groups.sp.queue_length"

        boss = new_agent(app, roles=("supervisor",), prefix="ALS")
        r = svc.post(f"/v1/service/alerts/{alert_id}/acknowledge", json={"note": "已加派人手"},
                     headers={"Patron-Act-As": boss})
        assert r.status_code == 200 and r.json()["acknowledged_by"] == boss, r.text
        r = svc.post(f"/v1/service/alerts/{alert_id}/acknowledge", json={}, headers={"Patron-Act-As": boss})
        assert r.status_code == 409 and r.json()["code"] == "alert-acknowledged"
        agent = new_agent(app, prefix="ALA")
        r = svc.post(f"/v1/service/alerts/{alert_id}/acknowledge", json={}, headers={"Patron-Act-As": agent})
        assert r.status_code == 403
    finally:
        http.delete(f"/v1/webhooks/{hook['id']}")
        receiver.close()
