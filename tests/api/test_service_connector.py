"""The shop connector over HTTP with the real server: lookups of orders, products, promotions and users (demo
store and a fake HTTP shop started in the test); the brief cache (a repeat within its TTL makes no second call,
after it one); the circuit breaker (fails, times out -> opens after N failed attempts, answers at once while open
without calling the shop, half-opens after the cooldown: a failed trial opens it again, a good one closes it);
and the customer view in one call. Time is the platform clock, moved on purpose; nothing waits on time."""
import datetime as dt
import secrets

import pytest

from app.platform import clock
from tests.conftest import Http, make_token
from tests.membership_factories import order as member_order, post as member_post
from tests.service_factories import FakeShop, new_agent

SETTINGS = ("SHOP_URL", "SHOP_AUTH_HEADER", "SHOP_AUTH_TOKEN", "SHOP_TIMEOUT_SECONDS", "SHOP_RETRIES",
            "SHOP_CACHE_SECONDS", "SHOP_BREAKER_FAILURES", "SHOP_BREAKER_COOLDOWN_SECONDS")


@pytest.fixture(scope="module")
def api(server):
    return Http(server, make_token(["service:read", "service:write", "tickets:write", "members:write", "act-as"],
                                   "connector-tests"))


@pytest.fixture()
def frozen():
    clock.set_now(clock.now().replace(microsecond=0))
    yield
    clock.set_now(None)


def advance(seconds):
    clock.set_now(clock.now() + dt.timedelta(seconds=seconds))


@pytest.fixture()
def shop(app):
    fake = FakeShop()
    saved = {k: app.config.get(k) for k in SETTINGS}
    app.config.update(SHOP_URL=fake.url, SHOP_AUTH_HEADER="X-Shop-Token", SHOP_AUTH_TOKEN="s3cret",
                      SHOP_TIMEOUT_SECONDS=0.5, SHOP_RETRIES=0, SHOP_CACHE_SECONDS=30, SHOP_BREAKER_FAILURES=3,
                      SHOP_BREAKER_COOLDOWN_SECONDS=60)
    yield fake
    app.config.update(saved)
    fake.close()


def test_lookups_from_the_demo_store(api, app):
    saved = app.config.get("SHOP_URL")
    app.config["SHOP_URL"] = None
    try:
        user = f"lu-{secrets.token_hex(3)}"
        orders = api.get(f"/v1/service/shop/users/{user}/orders", params={"limit": 2})
        assert orders.status_code == 200 and len(orders.json()["items"]) == 2, orders.text
        no = orders.json()["items"][0]["order_no"]
        assert api.get(f"/v1/service/shop/orders/{no}").json()["user_id"] == user
        assert api.get("/v1/service/shop/products/SKU-1").json()["sku"] == "SKU-1"
        assert api.get("/v1/service/shop/promotions").json()["items"][0]["code"]
        assert api.get(f"/v1/service/shop/users/{user}").json()["user_id"] == user
        r = api.get(f"/v1/service/shop/users/{user}/orders", params={"limit": 0})
        assert r.status_code == 422 and r.json()["errors"][0]["pointer"] == "/query/limit"
    finally:
        app.config["SHOP_URL"] = saved


def test_lookups_through_the_http_shop_and_its_errors(api, shop):
    shop.products["P-1"] = {"sku": "P-1", "title": "保温杯", "price_fen": 5900}
    shop.users["hu-1"] = {"user_id": "hu-1", "nickname": "小明"}
    shop.orders["O-1"] = {"order_no": "O-1", "user_id": "hu-1", "status": "paid", "amount_fen": 5900}
    shop.promotions[:] = [{"code": "MJ100-10", "title": "满100减10"}]
    assert api.get("/v1/service/shop/products/P-1").json()["title"] == "保温杯"
    assert api.get("/v1/service/shop/users/hu-1").json()["nickname"] == "小明"
    assert api.get("/v1/service/shop/users/hu-1/orders").json()["items"][0]["order_no"] == "O-1"
    assert api.get("/v1/service/shop/orders/O-1").json()["amount_fen"] == 5900
    assert api.get("/v1/service/shop/promotions").json()["items"] == [{"code": "MJ100-10", "title": "满100减10"}]
    r = api.get("/v1/service/shop/products/nope")
    assert r.status_code == 404 and r.json()["code"] == "not-found-in-shop"
    assert r.headers["Content-Type"].startswith("application/problem+json")
    shop.get_script[:] = ["fail"]
    r = api.get("/v1/service/shop/products/P-2")
    assert r.status_code == 503 and r.json()["code"] == "connector-unavailable" and r.json()["detail"]
    assert r.headers["Content-Type"].startswith("application/problem+json")
    shop.products["P-2"] = {"sku": "P-2"}
    assert api.get("/v1/service/shop/products/P-2").status_code == 200  # a failure was not cached


def test_a_repeat_lookup_is_served_from_the_cache_within_its_ttl_and_not_after(api, shop, frozen):
    shop.products["C-1"] = {"sku": "C-1", "price_fen": 100}
    path = "/products/C-1"
    assert api.get("/v1/service/shop/products/C-1").json()["price_fen"] == 100
    assert shop.gets[path] == 1
    shop.products["C-1"] = {"sku": "C-1", "price_fen": 200}
    advance(29)
    assert api.get("/v1/service/shop/products/C-1").json()["price_fen"] == 100  # cached: no second call
    assert shop.gets[path] == 1
    advance(2)  # 31 s after the first call: past the TTL
    assert api.get("/v1/service/shop/products/C-1").json()["price_fen"] == 200
    assert shop.gets[path] == 2


def test_breaker_opens_answers_without_calling_half_opens_and_closes(api, shop, frozen):
    shop.products.update({f"B-{i}": {"sku": f"B-{i}"} for i in range(10)})

    def get(i):
        return api.get(f"/v1/service/shop/products/B-{i}")

    shop.get_script[:] = ["fail", "slow", "fail"]  # fails, times out, fails: 3 failed attempts in a row
    for i in range(3):
        r = get(i)
        assert r.status_code == 503 and r.json()["code"] == "connector-unavailable", r.text
    assert sum(shop.gets.values()) == 3
    for i in range(3, 6):  # open: refused at once, the shop is not called
        r = get(i)
        assert r.status_code == 503 and r.json()["circuit"] == "open", r.text
    assert sum(shop.gets.values()) == 3
    advance(59)
    assert get(6).json()["circuit"] == "open" and sum(shop.gets.values()) == 3

    advance(2)  # cooldown over: half-open, one trial call, which fails -> open again
    shop.get_script[:] = ["fail"]
    r = get(6)
    assert r.status_code == 503 and "circuit" not in r.json() and sum(shop.gets.values()) == 4
    r = get(7)
    assert r.status_code == 503 and r.json()["circuit"] == "open" and sum(shop.gets.values()) == 4

    advance(61)  # half-open again: the shop recovered, the trial succeeds and closes the breaker
    assert get(7).status_code == 200 and sum(shop.gets.values()) == 5
    assert get(8).status_code == 200 and get(9).status_code == 200 and sum(shop.gets.values()) == 7
    shop.get_script[:] = ["fail"]  # closed: one failure is not enough to open it
    assert get(0).status_code == 503
    assert get(0).status_code == 200 and sum(shop.gets.values()) == 9


def test_half_open_admits_one_trial_at_a_time(frozen):
    from app.services.service.connectors import ConnectorUnavailable, _Breaker
    b = _Breaker()
    for _ in range(2):
        assert b.record(False, 2) is (_ == 1)
    with pytest.raises(ConnectorUnavailable) as exc:
        b.enter("http://shop", 10)
    assert exc.value.extra["circuit"] == "open"
    advance(10)
    b.enter("http://shop", 10)  # the trial
    with pytest.raises(ConnectorUnavailable) as exc:
        b.enter("http://shop", 10)  # another call while the trial is under way
    assert exc.value.extra["circuit"] == "half_open"
    assert b.record(True, 2) is False
    b.enter("http://shop", 10)
    b.enter("http://shop", 10)  # closed: everyone passes


def test_customer_view_returns_every_part_in_one_call(api, app):
    saved = app.config.get("SHOP_URL")
    app.config["SHOP_URL"] = None  # the demo store
    try:
        agent = new_agent(app, prefix="CV")
        user = f"cv-{secrets.token_hex(4)}"
        member_post(api, member_order(user, 3000))  # a member with growth (a level above the first)
        r = api.post("/v1/service/compensations", json={"user_id": user, "amount_fen": 600, "reason": "goodwill"},
                     headers={"Patron-Act-As": agent, "Idempotency-Key": f"cv-{secrets.token_hex(4)}"})
        assert r.status_code == 201, r.text
        t = api.post("/v1/tickets", json={"category": "物流/配送", "title": "快递没到", "user_id": user},
                     headers={"Patron-Act-As": agent, "Idempotency-Key": f"cv-{secrets.token_hex(4)}"})
        assert t.status_code == 201, t.text
        conv = api.post("/v1/service/conversations", json={"user_id": user}).json()["conversation"]["id"]
        r = api.get(f"/v1/service/customers/{user}", headers={"Patron-Act-As": agent})
        assert r.status_code == 200, r.text
        v = r.json()
        assert v["errors"] == {}
        assert v["member"]["level"] and isinstance(v["member"]["benefits"], list)
        assert v["service_benefits"] is not None and "priority" in v["service_benefits"]
        assert any(a["asset"] == "RED_PACKET" and sum(a["sub_accounts"].values()) == 600
                   for a in v["balances"]["accounts"])
        assert v["recent_orders"] and all(o["user_id"] == user for o in v["recent_orders"])
        assert [x["id"] for x in v["open_tickets"]] == [t.json()["id"]]
        assert [c["id"] for c in v["recent_conversations"]] == [conv]
        api.post(f"/v1/service/conversations/{conv}/leave", json={"user_id": user})
    finally:
        app.config["SHOP_URL"] = saved
