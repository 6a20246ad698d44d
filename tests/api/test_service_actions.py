"""Acting for the user against a fake HTTP order service (in the test, on an ephemeral port) that fails, times
out, then recovers: exactly one effect in the shop; policy limits refuse before anything is sent."""
import datetime as dt
import secrets

import pytest

from app.platform import clock, timefmt
from tests.conftest import Http, make_token
from tests.service_factories import FakeShop, new_agent


@pytest.fixture()
def shop(app):
    fake = FakeShop()
    saved = {k: app.config.get(k) for k in ("SHOP_URL", "SHOP_AUTH_HEADER", "SHOP_AUTH_TOKEN", "SHOP_TIMEOUT_SECONDS",
                                            "SHOP_RETRIES")}
    app.config.update(SHOP_URL=fake.url, SHOP_AUTH_HEADER="X-Shop-Token", SHOP_AUTH_TOKEN="s3cret",
                      SHOP_TIMEOUT_SECONDS=0.5, SHOP_RETRIES=1)
    yield fake
    app.config.update(saved)
    fake.httpd.shutdown()


@pytest.fixture(scope="module")
def api(server):
    return Http(server, make_token(["service:write", "act-as"], "actions-tests"))


def order(shop, status="delivered", days=3, amount=19900, user="au-1"):
    no = f"O{secrets.token_hex(4)}"
    shop.orders[no] = {"order_no": no, "user_id": user, "status": status, "amount_fen": amount,
                       "created_at": timefmt.iso(clock.now() - dt.timedelta(days=days))}
    return no


def test_fails_times_out_then_recovers_exactly_one_effect(api, app, shop):
    agent = new_agent(app, prefix="AA")
    no = order(shop)
    key = f"act-{secrets.token_hex(6)}"
    body = {"order_no": no, "user_id": "au-1", "params": {"title": "某某科技有限公司", "tax_no": "91310000XXXX"}}
    headers = {"Patron-Act-As": agent, "Idempotency-Key": key}

    shop.script = ["fail", "fail"]  # first request: 500 twice (one retry) -> the agent is told, nothing done
    r = api.post("/v1/service/actions/invoice", json=body, headers=headers)
    assert r.status_code == 503 and r.json()["code"] == "connector-unavailable", r.text
    action_id = r.json()["action_id"]
    assert api.get(f"/v1/service/actions/{action_id}").json()["state"] == "failed"
    assert shop.effects == {}

    shop.script = ["slow", "slow"]  # second request: the shop applies it but answers too late, twice
    r = api.post("/v1/service/actions/invoice", json=body, headers=headers)
    assert r.status_code == 503, r.text
    assert len(shop.effects) == 1  # applied once, although sent twice

    shop.script = []  # recovered: the same request again
    r = api.post("/v1/service/actions/invoice", json=body, headers=headers)
    assert r.status_code == 201, r.text
    done = r.json()
    assert done["id"] == action_id and done["state"] == "done" and done["attempts"] == 3
    assert done["response"]["ref"] == "SHOP-1" and done["response"]["params"]["tax_no"] == "91310000XXXX"
    assert len(shop.effects) == 1

    posts = shop.posts
    r = api.post("/v1/service/actions/invoice", json=body, headers=headers)  # replayed: not sent again
    assert r.status_code == 200 and r.json()["id"] == action_id and shop.posts == posts
    r = api.post("/v1/service/actions/invoice", json=dict(body, params={"title": "x"}), headers=headers)
    assert r.status_code == 409 and r.json()["code"] == "idempotency-key-reused"
    assert len(shop.effects) == 1


def test_policy_limits_refuse_before_anything_is_sent(api, app, shop):
    agent = new_agent(app, prefix="AB")
    cases = [("return", order(shop, days=30), "actions.return.max_order_age_days"),
             ("return", order(shop, amount=900000), "actions.return.max_amount_fen"),
             ("cancel", order(shop, status="delivered"), "actions.cancel.statuses")]
    for kind, no, rule in cases:
        r = api.post(f"/v1/service/actions/{kind}", json={"order_no": no},
                     headers={"Patron-Act-As": agent, "Idempotency-Key": f"k-{secrets.token_hex(6)}"})
        assert r.status_code == 409 and r.json()["code"] == "action-not-allowed" and r.json()["rule"] == rule, r.text
    r = api.post("/v1/service/actions/cancel", json={"order_no": order(shop, status="paid"), "user_id": "someone-else"},
                 headers={"Patron-Act-As": agent, "Idempotency-Key": f"k-{secrets.token_hex(6)}"})
    assert r.status_code == 409 and r.json()["rule"] == "actions.cancel.user"
    assert shop.posts == 0 and shop.effects == {}
    r = api.post("/v1/service/actions/cancel", json={"order_no": order(shop, status="paid")},
                 headers={"Patron-Act-As": agent, "Idempotency-Key": f"k-{secrets.token_hex(6)}"})
    assert r.status_code == 201 and r.json()["state"] == "done" and len(shop.effects) == 1
    no = order(shop)  # delivered 3 days ago, within the return limits
    r = api.post("/v1/service/actions/return", json={"order_no": no, "params": {"reason": "尺码不合"}},
                 headers={"Patron-Act-As": agent, "Idempotency-Key": f"k-{secrets.token_hex(6)}"})
    assert r.status_code == 201, r.text
    done = r.json()
    assert (done["kind"], done["order_no"], done["state"], done["rule"]) == ("return", no, "done", "actions.return")
    assert done["params"] == {"reason": "尺码不合"} and len(shop.effects) == 2
    r = api.post("/v1/service/actions/cancel", json={"order_no": "nope"},
                 headers={"Patron-Act-As": agent, "Idempotency-Key": f"k-{secrets.token_hex(6)}"})
    assert r.status_code == 404
    assert api.post("/v1/service/actions/cancel", json={"order_no": "x"},
                    headers={"Idempotency-Key": "k-1"}).status_code == 403  # a person acts


def test_customer_view_in_one_call_and_a_failing_connector_is_reported(api, app, shop):
    agent = new_agent(app, prefix="AC")
    user = f"cv-{secrets.token_hex(4)}"
    r = api.post("/v1/service/compensations", json={"user_id": user, "amount_fen": 800, "reason": "goodwill"},
                 headers={"Patron-Act-As": agent, "Idempotency-Key": f"cv-{secrets.token_hex(4)}"})
    assert r.status_code == 201, r.text
    r = api.post("/v1/service/conversations", json={"user_id": user})
    conv = r.json()["conversation"]["id"]
    shop.script = []
    app.config["SHOP_URL"] = None  # the built-in demo store
    r = api.get(f"/v1/service/customers/{user}", headers={"Patron-Act-As": agent})
    assert r.status_code == 200, r.text
    v = r.json()
    assert [c["id"] for c in v["recent_conversations"]] == [conv]
    assert any(a["asset"] == "RED_PACKET" and sum(a["sub_accounts"].values()) == 800 for a in v["balances"]["accounts"])
    assert v["recent_orders"] and all(o["user_id"] == user for o in v["recent_orders"])
    assert v["open_tickets"] == [] and v["service_benefits"] is not None
    app.config["SHOP_URL"] = "http://127.0.0.1:9"  # nothing listens: the orders part fails, the rest stands
    r = api.get(f"/v1/service/customers/{user}", headers={"Patron-Act-As": agent})
    assert r.status_code == 200 and r.json()["recent_orders"] is None
    assert r.json()["errors"]["recent_orders"]["code"] == "connector-unavailable"
    assert r.json()["recent_conversations"][0]["id"] == conv
    api.post(f"/v1/service/conversations/{conv}/leave", json={"user_id": user})
