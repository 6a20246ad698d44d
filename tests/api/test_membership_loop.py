"""The closed loop over HTTP: points -> mall voucher -> checkout with voucher, points and cash -> refunds back along the route."""
import datetime as dt

from app.services import ledger
from app.services.ledger import lot_operations
from tests.membership_factories import frozen_clock, order, post, uid  # noqa: F401

UTC = dt.timezone.utc


def _cash(member, fen):
    ledger.ensure_customer(member)
    ledger.apply_operation("recharge", {"customer": member, "amount": fen}, "tests", idempotency_key=uid("rc"),
                           client="tests")


def _clean():
    rep = ledger.reconcile()
    assert rep["ok"], {k: v for k, v in rep["checks"].items() if not v["ok"]}
    assert lot_operations.over_refunded() == []


def _points_lots(http, m):
    return [(lot["lot_id"], lot["remaining"], lot["expires_at"]) for lot in http.get(f"/v1/members/{m}").json()
            ["points"]["lots"]]


def test_voucher_from_points_applied_at_checkout_and_refunded_with_expiry(http, db_conn, frozen_clock):
    m = uid("loop")
    frozen_clock(dt.datetime(2026, 3, 1, 4, tzinfo=UTC))
    earned = post(http, order(m, 5000, at="2026-03-01T12:00:00+08:00"))["points"]["delta"]
    assert earned == 5000
    _cash(m, 50000)
    lots_before = _points_lots(http, m)
    (lot_id, _, points_expiry), = lots_before
    assert points_expiry.startswith("2027-12-31T16:00:00")

    r = http.post(f"/v1/members/{m}/mall/redemptions", json={"redemption_id": uid("rd"), "item": "voucher_20_199"})
    assert r.status_code == 201, r.text
    red = r.json()
    assert red["status"] == "issued" and red["points"] == 2000 and red["rule"] == "mall.items.voucher_20_199"
    assert red["issued"]["expires_at"] == "2026-03-31T04:00:00Z"  # valid_days 30
    again = http.post(f"/v1/members/{m}/mall/redemptions", json={"redemption_id": red["redemption_id"],
                                                                 "item": "voucher_20_199"})
    assert again.status_code == 200 and again.json() == red  # idempotent: nothing spent twice
    vid = red["issued"]["voucher_id"]
    held = http.get(f"/v1/members/{m}/vouchers").json()["items"]
    assert [(v["voucher_id"], v["amount_fen"], v["min_order_fen"], v["expires_at"]) for v in held] == [
        (vid, 2000, 19900, "2026-03-31T04:00:00Z")]
    assert _points_lots(http, m) == [(lot_id, 3000, points_expiry)]

    cart = {"items": [{"sku": "A", "price_fen": 15000, "quantity": 2}], "shipping_fen": 0}
    small = http.post(f"/v1/members/{m}/checkout-benefits", json={"items": [{"sku": "A", "price_fen": 9900}]}).json()
    assert small["vouchers"][0]["usable"] is False and "threshold" in small["vouchers"][0]["why_not"]
    assert small["best_combination"]["vouchers"] == []
    quote = http.post(f"/v1/members/{m}/checkout-benefits", json=cart).json()
    best = quote["best_combination"]
    assert [v["voucher_id"] for v in best["vouchers"]] == [vid] and best["voucher_fen"] == 2000
    payable = quote["payable_fen"]

    key = uid("pay")
    body = dict(cart, order_ref=uid("o"), points=1000)
    r = http.post(f"/v1/members/{m}/orders", json=body, key=key)
    assert r.status_code == 201, r.text
    paid = r.json()
    assert http.post(f"/v1/members/{m}/orders", json=body, key=key).json() == paid  # replay
    parts = {p["instrument"]: p for p in paid["parts"]}
    assert parts["points"]["units"] == 1000 and parts["voucher"]["units"] == 2000
    assert parts["cash"]["units"] == payable - 2000 - 1000
    assert paid["total_fen"] == payable
    assert http.get(f"/v1/members/{m}/vouchers").json()["items"] == []
    assert _points_lots(http, m) == [(lot_id, 2000, points_expiry)]
    cash_before = ledger.balances(m)["accounts"][0]["sub_accounts"]["available"]
    _clean()

    # partial refund: pro rata on cash and points; the voucher is indivisible and waits for the full refund
    half = {"refund_id": uid("rf"), "amount_fen": payable // 2}
    r = http.post(f"/v1/members/{m}/orders/{body['order_ref']}/refunds", json=half)
    assert r.status_code == 201, r.text
    again = http.post(f"/v1/members/{m}/orders/{body['order_ref']}/refunds", json=half)
    assert again.status_code == 200 and again.json() == r.json()  # idempotent by refund_id: the stored answer
    back = {b["instrument"]: b for b in r.json()["back"]}
    assert set(back) == {"cash", "points"}
    assert back["points"]["units"] == 1000 * (payable // 2) // payable
    assert back["points"]["lots"][0]["lot_id"] == lot_id
    assert back["points"]["lots"][0]["expires_at"] == "2027-12-31T16:00:00Z"
    over = http.post(f"/v1/members/{m}/orders/{body['order_ref']}/refunds",
                     json={"refund_id": uid("rf"), "amount_fen": payable})
    assert over.status_code == 422 and over.json()["code"] == "refund-exceeds-remaining"
    rest = payable - payable // 2
    r = http.post(f"/v1/members/{m}/orders/{body['order_ref']}/refunds", json={"refund_id": uid("rf"),
                                                                                "amount_fen": rest})
    assert r.status_code == 201, r.text
    assert r.json()["refundable_after_fen"] == 0
    # everything is back: the voucher with its expiry, the points in their lot, the cash
    held = http.get(f"/v1/members/{m}/vouchers").json()["items"]
    assert [(v["voucher_id"], v["remaining_fen"], v["expires_at"]) for v in held] == [
        (vid, 2000, "2026-03-31T04:00:00Z")]
    assert _points_lots(http, m) == [(lot_id, 3000, points_expiry)]
    assert ledger.balances(m)["accounts"][0]["sub_accounts"]["available"] == cash_before + parts["cash"]["units"]
    order_view = http.get(f"/v1/members/{m}/orders/{body['order_ref']}").json()
    assert order_view["refunded_fen"] == payable and len(order_view["refunds"]) == 2
    _clean()


def test_expired_lot_refund_gets_the_policy_extension(http, db_conn, frozen_clock):
    m = uid("ext")
    frozen_clock(dt.datetime(2026, 3, 1, 4, tzinfo=UTC))
    post(http, order(m, 3000, at="2026-03-01T12:00:00+08:00"))
    _cash(m, 50000)
    red = http.post(f"/v1/members/{m}/mall/redemptions",
                    json={"redemption_id": uid("rd"), "item": "voucher_20_199"}).json()
    body = {"order_ref": uid("o"), "items": [{"sku": "A", "price_fen": 30000}]}
    paid = http.post(f"/v1/members/{m}/orders", json=body, key=uid("k"))
    assert paid.status_code == 201, paid.text
    frozen_clock(dt.datetime(2026, 4, 15, 4, tzinfo=UTC))  # the voucher expired on 2026-03-31
    r = http.post(f"/v1/members/{m}/orders/{body['order_ref']}/refunds",
                  json={"refund_id": uid("rf"), "amount_fen": paid.json()["total_fen"]})
    assert r.status_code == 201, r.text
    v = [b for b in r.json()["back"] if b["instrument"] == "voucher"][0]
    assert v["lots"][0]["original_expires_at"] == red["issued"]["expires_at"]
    assert v["lots"][0]["expires_at"] == "2026-04-22T04:00:00Z"  # mall.refunds.expired_extension_days: 7
    _clean()


def test_monthly_coupons_are_held_vouchers_applied_at_checkout(http, db_conn):
    from app.services.membership import benefits
    m = uid("cpn")
    post(http, order(m, 1200))  # 铜牌: coupon_5 (5 yuan off 59), one a month
    _cash(m, 100000)
    assert benefits.issue_coupons()["issued"] >= 1
    held = http.get(f"/v1/members/{m}/vouchers").json()["items"]
    assert [(v["amount_fen"], v["min_order_fen"], v["source"]) for v in held] == [(500, 5900, "benefit:coupon_5")]
    body = {"order_ref": uid("o"), "items": [{"sku": "A", "price_fen": 6000}], "red_packet_fen": 0}
    r = http.post(f"/v1/members/{m}/orders", json=body, key=uid("k"))
    assert r.status_code == 201, r.text
    assert [(p["instrument"], p["units"]) for p in r.json()["parts"]] == [("voucher", 500), ("cash", 5500)]
    # a named voucher that is no longer held is refused, nothing is spent
    again = dict(body, order_ref=uid("o"), voucher_ids=[held[0]["voucher_id"]])
    r = http.post(f"/v1/members/{m}/orders", json=again, key=uid("k"))
    assert r.status_code == 422 and r.json()["code"] == "voucher-not-usable"
    _clean()


def test_the_mall_wide_cap_is_named_before_the_item_caps(http, db_conn):
    m = uid("cap")
    post(http, order(m, 6000))
    ids = [uid("rd") for _ in range(5)]
    codes = [http.post(f"/v1/members/{m}/mall/redemptions", json={"redemption_id": i, "item": "red_packet_5"})
             for i in ids]
    assert [r.status_code for r in codes] == [201, 201, 201, 201, 422]
    problem = codes[-1].json()
    assert problem["cap"] == "mall_member_daily" and problem["caps"][0]["rule"] == "mall.caps.mall_member_daily"
    assert problem["caps"][0]["limit_count"] == 4 and problem["caps"][0]["used_count"] == 4
    assert http.get(f"/v1/members/{m}").json()["points"]["balance"] == 6000 - 4 * 500  # the refused one spent nothing
    _clean()
