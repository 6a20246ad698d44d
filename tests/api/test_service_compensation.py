"""Compensation (红包赔付) over HTTP against the real server: within the limit (paid once, even replayed), above it
(approval, then paid), past the daily budget (refused, nothing paid); ledger balances asserted; daily report."""
import secrets

import pytest

from tests.conftest import Http, make_token
from tests.service_factories import new_agent


@pytest.fixture(scope="module")
def api(server, app):
    return Http(server, make_token(["service:write", "ledger:read", "act-as"], "compensation-tests"))


def red_packets(api, user):
    r = api.get(f"/v1/ledger/customers/{user}/balances")
    if r.status_code == 404:
        return 0
    assert r.status_code == 200, r.text
    return sum(sum(a["sub_accounts"].values()) for a in r.json()["accounts"] if a["asset"] == "RED_PACKET")


def pay(api, staff_no, key, **body):
    return api.post("/v1/service/compensations", json=body,
                    headers={"Patron-Act-As": staff_no, "Idempotency-Key": key})


def test_within_limit_replayed_above_limit_approved_and_past_budget_refused(api, app):
    agent = new_agent(app, roles=("agent_l1",), prefix="CA")  # limit 2000 per payment, 10000 a day
    boss = new_agent(app, roles=("supervisor",), prefix="CS")
    user = f"cu-{secrets.token_hex(4)}"
    k1 = f"comp-{secrets.token_hex(6)}"

    r = pay(api, agent, k1, user_id=user, amount_fen=1500, reason="delivery_delay", note="快递延误三天")
    assert r.status_code == 201, r.text
    first = r.json()
    assert first["state"] == "paid" and first["journal_id"] and first["rule"].startswith("compensation.")
    assert red_packets(api, user) == 1500
    r = pay(api, agent, k1, user_id=user, amount_fen=1500, reason="delivery_delay", note="快递延误三天")
    assert r.status_code == 201 and r.json()["id"] == first["id"]  # replayed: paid once
    assert red_packets(api, user) == 1500
    r = pay(api, agent, k1, user_id=user, amount_fen=1600, reason="delivery_delay")
    assert r.status_code == 409 and r.json()["code"] == "idempotency-key-reused"

    r = pay(api, agent, f"comp-{secrets.token_hex(6)}", user_id=user, amount_fen=3000, reason="quality")
    assert r.status_code == 202, r.text
    pending = r.json()
    assert pending["state"] == "pending_approval" and pending["journal_id"] is None
    assert red_packets(api, user) == 1500
    r = api.post(f"/v1/service/compensations/{pending['id']}/decision", json={"decision": "approve"},
                 headers={"Patron-Act-As": agent})
    assert r.status_code == 403 and r.json()["code"] == "forbidden"  # an agent_l1 holds no compensation.approve
    own = pay(api, boss, f"comp-{secrets.token_hex(6)}", user_id=user, amount_fen=25000, reason="quality")
    assert own.status_code == 202, own.text  # above the supervisor's own limit
    r = api.post(f"/v1/service/compensations/{own.json()['id']}/decision", json={"decision": "approve"},
                 headers={"Patron-Act-As": boss})
    assert r.status_code == 403 and r.json()["code"] == "own-request"
    assert red_packets(api, user) == 1500
    r = api.post(f"/v1/service/compensations/{pending['id']}/decision", json={"decision": "approve", "note": "同意"},
                 headers={"Patron-Act-As": boss})
    assert r.status_code == 200 and r.json()["state"] == "paid" and r.json()["decided_by"] == boss
    assert red_packets(api, user) == 4500
    r = api.post(f"/v1/service/compensations/{pending['id']}/decision", json={"decision": "approve"},
                 headers={"Patron-Act-As": boss})
    assert r.status_code == 409 and r.json()["code"] == "not-pending"
    assert red_packets(api, user) == 4500

    for amount in (2000, 2000):  # 4500 used -> 8500
        assert pay(api, agent, f"comp-{secrets.token_hex(6)}", user_id=user, amount_fen=amount,
                   reason="service").status_code == 201
    k_over = f"comp-{secrets.token_hex(6)}"
    r = pay(api, agent, k_over, user_id=user, amount_fen=2000, reason="service")
    assert r.status_code == 409 and r.json()["code"] == "daily-budget-exceeded", r.text
    assert r.json()["used_today_fen"] == 8500 and r.json()["budget_fen"] == 10000
    assert r.headers["Content-Type"].startswith("application/problem+json")
    assert red_packets(api, user) == 8500
    assert pay(api, agent, k_over, user_id=user, amount_fen=2000, reason="service").status_code == 409  # replayed
    assert red_packets(api, user) == 8500
    r = pay(api, agent, f"comp-{secrets.token_hex(6)}", user_id=user, amount_fen=100, reason="nope")
    assert r.status_code == 422

    report = api.get("/v1/service/compensations/report", params={"date": first["business_date"]}).json()
    mine = {i["reason"]: i for i in report["items"] if i["staff_no"] == agent}
    assert mine["delivery_delay"]["paid_fen"] == 1500 and mine["quality"]["paid_fen"] == 3000
    assert mine["service"]["paid_count"] == 2 and mine["service"]["paid_fen"] == 4000
    r = api.get("/v1/service/compensations/report", params={"date": first["business_date"], "format": "csv"})
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/csv")
    assert r.content.startswith(b"\xef\xbb\xbf")
    lines = r.content.decode("utf-8-sig").splitlines()
    assert lines[0] == "staff_no,reason,paid_count,paid_fen,pending_count,pending_fen,rejected_count"
    assert f"{agent},service,2,4000,0,0,0" in lines
