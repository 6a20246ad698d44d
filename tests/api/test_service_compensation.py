"""Compensation (红包赔付) over HTTP against the real server: within the limit (paid at once, even replayed), above
it (an approval step on a ticket: the ticket's approval pays exactly once, a rejection pays nothing), past the
daily budget (refused, nothing paid), the budget's business day (midnight in the business time zone, not UTC);
ledger balances asserted; daily report as JSON and CSV."""
import datetime as dt
import secrets

import pytest

from tests.conftest import Http, make_token
from tests.service_factories import new_agent


@pytest.fixture(scope="module")
def api(server, app):
    return Http(server, make_token(["service:write", "service:read", "ledger:read", "tickets:write", "tickets:read",
                                    "policy:read", "act-as"], "compensation-tests"))


@pytest.fixture()
def frozen():
    from app.platform import clock
    yield clock.set_now
    clock.set_now(None)


def red_packets(api, user):
    r = api.get(f"/v1/ledger/customers/{user}/balances")
    if r.status_code == 404:
        return 0
    assert r.status_code == 200, r.text
    return sum(sum(a["sub_accounts"].values()) for a in r.json()["accounts"] if a["asset"] == "RED_PACKET")


def pay(api, staff_no, key, **body):
    return api.post("/v1/service/compensations", json=body,
                    headers={"Patron-Act-As": staff_no, "Idempotency-Key": key})


def decide(api, staff_no, ticket_id, decision, key=None, comment=None):
    body = {"decision": decision, **({"comment": comment} if comment else {})}
    headers = {"Patron-Act-As": staff_no, **({"Idempotency-Key": key} if key else {})}
    return api.post(f"/v1/tickets/{ticket_id}/approvals", json=body, headers=headers)


def comp(api, comp_id):
    r = api.get(f"/v1/service/compensations/{comp_id}")
    assert r.status_code == 200, r.text
    return r.json()


def key():
    return f"comp-{secrets.token_hex(6)}"


def test_within_limit_paid_at_once_and_replayed_once(api, app):
    agent = new_agent(app, roles=("agent_l1",), prefix="CA")  # limit 2000 per payment, 10000 a day
    user = f"cu-{secrets.token_hex(4)}"
    k1 = key()
    r = pay(api, agent, k1, user_id=user, amount_fen=1500, reason="delivery_delay", note="快递延误三天")
    assert r.status_code == 201, r.text
    first = r.json()
    assert first["state"] == "paid" and first["journal_id"] and first["approval_ticket_id"] is None
    assert first["rule"] == "compensation.daily_budget_fen_by_role.agent_l1" and first["policy_version"]
    assert red_packets(api, user) == 1500
    r = pay(api, agent, k1, user_id=user, amount_fen=1500, reason="delivery_delay", note="快递延误三天")
    assert r.status_code == 201 and r.json()["id"] == first["id"]  # replayed: paid once
    assert red_packets(api, user) == 1500
    r = pay(api, agent, k1, user_id=user, amount_fen=1600, reason="delivery_delay")
    assert r.status_code == 409 and r.json()["code"] == "idempotency-key-reused"
    r = pay(api, agent, key(), user_id=user, amount_fen=100, reason="nope")
    assert r.status_code == 422 and r.json()["code"] == "unknown-reason"
    assert red_packets(api, user) == 1500


def test_above_limit_is_an_approval_step_on_a_ticket_that_pays_once(api, app, admin_token, server):
    agent = new_agent(app, roles=("agent_l1",), prefix="CA")
    boss = new_agent(app, roles=("supervisor",), prefix="CS")
    user = f"cu-{secrets.token_hex(4)}"
    parent = api.post("/v1/tickets", json={"category": "投诉", "title": "快递丢件", "user_id": user},
                      headers={"Patron-Act-As": agent, "Idempotency-Key": key()})
    assert parent.status_code == 201, parent.text
    parent_id = parent.json()["id"]

    k = key()
    r = pay(api, agent, k, user_id=user, amount_fen=3000, reason="quality", note="破损", ticket_id=parent_id)
    assert r.status_code == 202, r.text
    pending = r.json()
    assert pending["state"] == "pending_approval" and pending["journal_id"] is None
    tid = pending["approval_ticket_id"]
    assert tid and red_packets(api, user) == 0
    again = pay(api, agent, k, user_id=user, amount_fen=3000, reason="quality", note="破损", ticket_id=parent_id)
    assert again.status_code == 202 and again.json()["approval_ticket_id"] == tid  # replayed: one ticket
    t = api.get(f"/v1/tickets/{tid}").json()
    assert t["category"] == "赔付审批" and t["state"] == "approval" and t["amount_fen"] == 3000
    assert t["user"]["id"] == user and set(t["allowed_transitions"]) == {"approve", "reject"}
    notes = api.get(f"/v1/tickets/{parent_id}/comments").json()
    notes = notes["items"] if isinstance(notes, dict) else notes
    assert any(f"工单 {tid}" in c["body"] for c in notes)

    r = decide(api, agent, tid, "approve")
    assert r.status_code == 403 and r.json()["code"] == "forbidden"  # an agent_l1 approves nothing
    assert red_packets(api, user) == 0

    ka = key()
    r = decide(api, boss, tid, "approve", key=ka, comment="同意")
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "paid"
    assert red_packets(api, user) == 3000
    paid = comp(api, pending["id"])
    assert paid["state"] == "paid" and paid["decided_by"] == boss and paid["journal_id"]
    assert paid["rule"] == "tickets:compensation_approval.paid.on_enter" and paid["policy_version"]
    # replayed with the same key, then again without one: paid once
    r = decide(api, boss, tid, "approve", key=ka, comment="同意")
    assert r.status_code == 200 and r.json()["state"] == "paid"
    r = decide(api, boss, tid, "approve")
    assert r.status_code == 409 and r.json()["code"] == "no-approval-pending"
    assert red_packets(api, user) == 3000
    assert comp(api, pending["id"])["journal_id"] == paid["journal_id"]
    approvals = api.get(f"/v1/tickets/{tid}/approvals").json()["items"]
    assert [(a["decision"], a["by"]) for a in approvals] == [("approve", boss)]
    history = api.get(f"/v1/tickets/{tid}/history").json()
    history = history["items"] if isinstance(history, dict) else history
    acts = [e for e in history if e["kind"] == "action"]
    assert len(acts) == 1 and acts[0]["detail"]["journal_id"] == paid["journal_id"]
    assert acts[0]["rule"] == "compensation_approval.paid.on_enter" and acts[0]["policy_version"]
    d = api.get("/v1/decisions", params={"subject": f"service:compensation:{pending['id']}"})
    assert d.status_code == 200, d.text
    rules = [x["rule"] for x in d.json()["items"]]
    assert "tickets:compensation_approval.paid.on_enter" in rules and "compensation.limit_fen_by_role.agent_l1" in rules
    audit = Http(server, admin_token).get("/v1/audit", params={"subject": f"service:compensation:{pending['id']}"})
    assert audit.status_code == 200, audit.text
    actions = sorted(a["action"] for a in audit.json()["items"])
    assert actions == ["compensation.approved", "compensation.requested"]


def test_approval_rejected_pays_nothing_and_approvers_are_checked(api, app):
    agent2 = new_agent(app, roles=("agent_l2",), prefix="CB")  # limit 5000, budget 30000
    boss = new_agent(app, roles=("supervisor",), prefix="CS")  # limit 20000
    other_boss = new_agent(app, roles=("supervisor",), prefix="CS")
    user = f"cu-{secrets.token_hex(4)}"

    r = pay(api, agent2, key(), user_id=user, amount_fen=25000, reason="goodwill")
    assert r.status_code == 202, r.text
    big = r.json()
    r = decide(api, boss, big["approval_ticket_id"], "approve")
    assert r.status_code == 403 and r.json()["code"] == "above-your-limit", r.text  # refused as a whole
    assert api.get(f"/v1/tickets/{big['approval_ticket_id']}").json()["state"] == "approval"
    assert comp(api, big["id"])["state"] == "pending_approval"
    r = decide(api, boss, big["approval_ticket_id"], "reject")
    assert r.status_code == 422 and r.json()["code"] == "comment-required"
    r = decide(api, boss, big["approval_ticket_id"], "reject", comment="金额过高")
    assert r.status_code == 200 and r.json()["state"] == "rejected", r.text
    rejected = comp(api, big["id"])
    assert rejected["state"] == "rejected" and rejected["journal_id"] is None and rejected["decided_by"] == boss
    assert red_packets(api, user) == 0
    r = decide(api, other_boss, big["approval_ticket_id"], "approve")
    assert r.status_code == 409  # decided: nothing more to approve
    assert red_packets(api, user) == 0

    own = pay(api, boss, key(), user_id=user, amount_fen=20500, reason="quality")
    assert own.status_code == 202, own.text  # above the supervisor's own limit
    r = decide(api, boss, own.json()["approval_ticket_id"], "approve")
    assert r.status_code == 403 and r.json()["code"] == "own-request"
    assert red_packets(api, user) == 0
    r = decide(api, other_boss, own.json()["approval_ticket_id"], "approve")
    assert r.status_code == 403 and r.json()["code"] == "above-your-limit"
    r = decide(api, other_boss, own.json()["approval_ticket_id"], "reject", comment="超出主管限额")
    assert r.status_code == 200 and comp(api, own.json()["id"])["state"] == "rejected"
    assert red_packets(api, user) == 0

    report = api.get("/v1/service/compensations/report", params={"date": big["business_date"]}).json()
    mine = {i["reason"]: i for i in report["items"] if i["staff_no"] == agent2}
    assert mine["goodwill"]["rejected_count"] == 1 and mine["goodwill"]["paid_fen"] == 0


def test_past_the_daily_budget_refused_replayed_and_reported(api, app):
    agent = new_agent(app, roles=("agent_l1",), prefix="CA")  # 10000 a day
    user = f"cu-{secrets.token_hex(4)}"
    first = None
    for amount, reason in ((2000, "service"), (2000, "service"), (1500, "delivery_delay"), (2000, "price")):
        r = pay(api, agent, key(), user_id=user, amount_fen=amount, reason=reason)
        assert r.status_code == 201, r.text
        first = first or r.json()
    pending = pay(api, agent, key(), user_id=user, amount_fen=2400, reason="quality")  # pending counts: 9900
    assert pending.status_code == 202
    k_over = key()
    r = pay(api, agent, k_over, user_id=user, amount_fen=200, reason="service")
    assert r.status_code == 409 and r.json()["code"] == "daily-budget-exceeded", r.text
    assert r.json()["used_today_fen"] == 9900 and r.json()["budget_fen"] == 10000
    assert r.headers["Content-Type"].startswith("application/problem+json")
    assert red_packets(api, user) == 7500
    r = pay(api, agent, k_over, user_id=user, amount_fen=200, reason="service")  # replayed refusal
    assert r.status_code == 409 and r.json()["code"] == "daily-budget-exceeded"
    assert red_packets(api, user) == 7500
    assert pay(api, agent, key(), user_id=user, amount_fen=100, reason="service").status_code == 201  # 10000

    day = first["business_date"]
    report = api.get("/v1/service/compensations/report", params={"date": day}).json()
    assert report["date"] == day
    mine = {i["reason"]: i for i in report["items"] if i["staff_no"] == agent}
    assert mine["service"] == {"staff_no": agent, "reason": "service", "paid_count": 3, "paid_fen": 4100,
                               "pending_count": 0, "pending_fen": 0, "rejected_count": 0}
    assert mine["quality"]["pending_count"] == 1 and mine["quality"]["pending_fen"] == 2400
    assert mine["delivery_delay"]["paid_fen"] == 1500 and mine["price"]["paid_fen"] == 2000
    r = api.get("/v1/service/compensations/report", params={"date": day, "format": "csv"})
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/csv")
    assert r.content.startswith(b"\xef\xbb\xbf")
    lines = r.content.decode("utf-8-sig").splitlines()
    assert lines[0] == "staff_no,reason,paid_count,paid_fen,pending_count,pending_fen,rejected_count"
    assert f"{agent},service,3,4100,0,0,0" in lines and f"{agent},quality,0,0,1,2400,0" in lines
    r = api.get("/v1/service/compensations/report", params={"date": "yesterday"})
    assert r.status_code == 422


def test_daily_budget_counts_the_business_day_not_the_utc_day(api, app, frozen):
    """The service calendar is in Asia/Shanghai (UTC+8): 15:50Z is 23:50 there, 16:05Z the next morning."""
    agent = new_agent(app, roles=("agent_l1",), prefix="CD")
    user = f"cu-{secrets.token_hex(4)}"
    utc_day = dt.datetime.utcnow().date() + dt.timedelta(days=3)
    frozen(dt.datetime.combine(utc_day, dt.time(15, 50)))
    for _ in range(5):
        r = pay(api, agent, key(), user_id=user, amount_fen=2000, reason="service")
        assert r.status_code == 201, r.text
        assert r.json()["business_date"] == utc_day.isoformat()
    r = pay(api, agent, key(), user_id=user, amount_fen=2000, reason="service")
    assert r.status_code == 409 and r.json()["business_date"] == utc_day.isoformat()
    frozen(dt.datetime.combine(utc_day, dt.time(15, 59, 59)))
    assert pay(api, agent, key(), user_id=user, amount_fen=1, reason="service").status_code == 409
    frozen(dt.datetime.combine(utc_day, dt.time(16, 5)))  # same UTC date, next business day
    r = pay(api, agent, key(), user_id=user, amount_fen=2000, reason="service")
    assert r.status_code == 201, r.text
    next_day = (utc_day + dt.timedelta(days=1)).isoformat()
    assert r.json()["business_date"] == next_day
    report = api.get("/v1/service/compensations/report").json()  # default: today's business day
    assert report["date"] == next_day
    assert [i["paid_fen"] for i in report["items"] if i["staff_no"] == agent] == [2000]
    report = api.get("/v1/service/compensations/report", params={"date": utc_day.isoformat()}).json()
    assert [i["paid_fen"] for i in report["items"] if i["staff_no"] == agent] == [10000]
    assert red_packets(api, user) == 12000
