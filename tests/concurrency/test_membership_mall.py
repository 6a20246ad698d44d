"""The points mall under 16 concurrent redemptions over HTTP: stock never oversold, every cap enforced and named."""
from concurrent.futures import ThreadPoolExecutor

import pytest

from app.services import ledger
from app.services.ledger import lot_operations
from tests.conftest import Http
from tests.membership_factories import order, post, uid

N = 16


@pytest.fixture()
def flash_items(http):
    """The active set plus three test items (small stock, a member cap, an all-members cap); restored afterwards."""
    active = http.get("/v1/policies/active?files=1").json()
    original = active["files"]
    tag = uid("t").replace("-", "_")
    codes = {k: f"{k}_{tag}" for k in ("stock", "member", "all")}
    extra = (f"  - {{code: {codes['stock']}, type: red_packet, name: 秒杀红包, price_points: 100, stock: 10, "
             f"amount_fen: 100, valid_days: 7}}\n"
             f"  - {{code: {codes['member']}, type: red_packet, name: 限领红包, price_points: 100, stock: 1000, "
             f"amount_fen: 100, valid_days: 7, caps: [{{name: three_a_day, scope: member, window: day, max_count: 3}}]}}\n"
             f"  - {{code: {codes['all']}, type: red_packet, name: 限量红包, price_points: 100, stock: 1000, "
             f"amount_fen: 100, valid_days: 7, caps: [{{name: five_for_all, scope: all, window: day, max_count: 5}}]}}\n")
    files = dict(original)
    text = files["policies/mall.yaml"]
    files["policies/mall.yaml"] = text.replace("checkout:\n", extra + "checkout:\n", 1)
    r = http.post("/v1/policies/apply", json={"files": files, "note": "mall concurrency test"})
    assert r.status_code == 200, r.text
    try:
        yield codes
    finally:
        assert http.post("/v1/policies/apply", json={"files": original, "note": "restore"}).status_code == 200


def _members(http, n):
    ms = [uid("mc") for _ in range(n)]
    for m in ms:
        post(http, order(m, 1000))
    return ms


def _redeem_all(server, token, pairs):
    def one(pair):
        member, item = pair
        h = Http(server, token)
        r = h.post(f"/v1/members/{member}/mall/redemptions", json={"redemption_id": uid("rd"), "item": item})
        return r.status_code, r.json()
    with ThreadPoolExecutor(N) as pool:
        return list(pool.map(one, pairs))


def test_sixteen_concurrent_redemptions(http, server, admin_token, db_conn, flash_items):
    # stock 10, 16 members at once: exactly 10 issued, 6 told it is sold out
    ms = _members(http, N)
    out = _redeem_all(server, admin_token, [(m, flash_items["stock"]) for m in ms])
    codes = sorted(s for s, _ in out)
    assert codes == [201] * 10 + [409] * 6, out
    assert {b["code"] for s, b in out if s == 409} == {"mall-out-of-stock"}
    items = {i["code"]: i for i in http.get("/v1/mall/items").json()["items"]}
    assert items[flash_items["stock"]]["stock_left"] == 0

    # one member, 16 at once, 3 a day for this item: 3 issued, 13 refused naming the cap
    (m,) = _members(http, 1)
    out = _redeem_all(server, admin_token, [(m, flash_items["member"])] * N)
    assert sorted(s for s, _ in out) == [201] * 3 + [422] * 13, out
    refused = [b for s, b in out if s == 422]
    assert {b["code"] for b in refused} == {"redemption-limit-exceeded"}
    assert {b["cap"] for b in refused} == {"three_a_day"}
    assert all(b["caps"][0]["limit_count"] == 3 and b["caps"][0]["used_count"] == 3 for b in refused)
    assert sum(lot["remaining_fen"] for lot in http.get(f"/v1/members/{m}/vouchers").json()["items"]) == 300

    # 16 members, 5 a day for all members together
    ms = _members(http, N)
    out = _redeem_all(server, admin_token, [(m, flash_items["all"]) for m in ms])
    assert sorted(s for s, _ in out) == [201] * 5 + [422] * 11, out
    assert {b["cap"] for s, b in out if s == 422} == {"five_for_all"}
    assert all(b["caps"][0]["scope"] == "all" for s, b in out if s == 422)

    rep = ledger.reconcile()
    assert rep["ok"], {k: v for k, v in rep["checks"].items() if not v["ok"]}
    assert lot_operations.over_refunded() == []


def test_sixteen_concurrent_refunds_never_exceed_the_order(http, server, admin_token, db_conn):
    m = uid("crf")
    post(http, order(m, 5000))
    ledger.ensure_customer(m)
    ledger.apply_operation("recharge", {"customer": m, "amount": 100000}, "tests", idempotency_key=uid("rc"),
                           client="tests")
    body = {"order_ref": uid("o"), "items": [{"sku": "A", "price_fen": 30000}], "points": 1000}
    paid = http.post(f"/v1/members/{m}/orders", json=body, key=uid("k"))
    assert paid.status_code == 201, paid.text
    total = paid.json()["total_fen"]
    share = total // 5  # 16 refunds of a fifth each: only 5 fit

    def one(_):
        h = Http(server, admin_token)
        r = h.post(f"/v1/members/{m}/orders/{body['order_ref']}/refunds",
                   json={"refund_id": uid("rf"), "amount_fen": share})
        return r.status_code, r.json()
    with ThreadPoolExecutor(N) as pool:
        out = list(pool.map(one, range(N)))
    assert sorted(s for s, _ in out) == [201] * 5 + [422] * 11, out
    assert {b["code"] for s, b in out if s == 422} == {"refund-exceeds-remaining"}
    view = http.get(f"/v1/members/{m}/orders/{body['order_ref']}").json()
    assert view["refunded_fen"] == share * 5 <= total
    parts = {p["instrument"]: p for p in view["parts"]}
    assert all(p["refunded_units"] <= p["units"] for p in parts.values())
    rep = ledger.reconcile()
    assert rep["ok"], {k: v for k, v in rep["checks"].items() if not v["ok"]}
    assert lot_operations.over_refunded() == []
