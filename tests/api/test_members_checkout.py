"""Checkout benefits for each level over HTTP: discounts, fee waivers, coupons, points to earn, each with rule and version."""
import pytest

from tests.membership_factories import order, post, uid

CART = {"items": [{"sku": "A", "price_fen": 10000, "quantity": 2, "category": "food"},
                  {"sku": "B", "price_fen": 5000}], "shipping_fen": 1000, "channel": "app"}

# level -> (yuan to reach it, discount, waived shipping, coupons, points, cashback)
CASES = {
    "注册": (0, None, 0, [], 250, 0),
    "铜牌": (1000, None, 1000, ["coupon_5"], 250, 0),
    "银牌": (2000, ("price_98", 500), 1000, ["coupon_5"], 294, 0),
    "金牌": (10000, ("price_95", 1250), 1000, ["coupon_20"], 355, 237),
    "钻石": (30000, ("price_95", 1250), 1000, ["coupon_20"], 474, 237),
}


@pytest.mark.parametrize("level", list(CASES))
def test_checkout_benefits_per_level(http, level):
    yuan, discount, waived, coupons, points, cashback = CASES[level]
    m = uid("co")
    if yuan:
        assert post(http, order(m, yuan))["level"]["level"] == level
    r = http.post(f"/v1/members/{m}/checkout-benefits", json=CART)
    assert r.status_code == 200, r.text
    out = r.json()
    version = out["policy_version"]
    assert out["level"] == level and out["subtotal_fen"] == 25000
    applied = [d for d in out["discounts"] if d["applied"]]
    if discount:
        assert [(d["benefit"], d["amount_fen"]) for d in applied] == [discount]
        assert applied[0]["rule"] == f"benefits.levels.{level}.{discount[0]}" and applied[0]["version"] == version
    else:
        assert applied == []
    assert sum(w["amount_fen"] for w in out["fee_waivers"]) == waived
    assert all(w["rule"].startswith(f"benefits.levels.{level}.") for w in out["fee_waivers"])
    assert [c["benefit"] for c in out["coupons"] if c["usable"]] == coupons
    assert out["points_to_earn"]["points"] == points
    assert all(p["rule"] and p["version"] == version for p in out["points_to_earn"]["rules"])
    assert sum(c["amount_fen"] for c in out["cashback"]) == cashback
    assert out["payable_fen"] == 25000 + 1000 - (discount[1] if discount else 0) - waived


def test_paid_plan_discount_beats_level_and_service_benefits(http, db_conn):
    from app.services import ledger, membership
    m = uid("co")
    post(http, order(m, 2000))  # 银牌
    ledger.ensure_customer(m)
    ledger.apply_operation("recharge", {"customer": m, "amount": 1500}, "tests", idempotency_key=uid("rc"),
                           client="tests")
    assert membership.service_benefits(m)["queue"] == "priority"
    assert http.post(f"/v1/members/{m}/subscriptions", json={"plan": "yule_monthly"}, key=uid("k")).status_code == 201
    out = http.post(f"/v1/members/{m}/checkout-benefits", json=CART).json()
    best = [d for d in out["discounts"] if d["applied"]][0]
    assert best["benefit"] == "card_price_90" and best["amount_fen"] == 2500
    assert best["rule"] == "benefits.plans.yule_monthly.card_price_90"
    assert out["plan"] == "yule_monthly"
    facts = membership.user_facts(m)
    assert facts == {"level": "银牌", "paid": True, "plan": "yule_monthly", "growth": 2000, "known": True}
    svc = http.get(f"/v1/members/{m}/service-benefits").json()
    assert svc["priority"] == 2 and svc["queue"] == "vip"


def test_checkout_rejects_bad_carts(http):
    r = http.post(f"/v1/members/{uid()}/checkout-benefits", json={"items": []})
    assert r.status_code == 422
    r = http.post(f"/v1/members/{uid()}/checkout-benefits", json={"items": [{"sku": "A", "price_fen": -1}]})
    assert r.status_code == 422 and r.json()["errors"][0]["pointer"] == "/items/0/price_fen"


def test_cashback_benefit_is_credited_and_clawed_back(http, db_conn):
    from app.services import ledger
    from tests.membership_factories import event
    m = uid("cb")
    post(http, order(m, 10000))  # -> 金牌 (cashback_1: 100 bp) from the next order on
    e = post(http, order(m, 500, order_ref=f"{m}-X"))
    assert e["cashback"] == [{"rule": "benefits.levels.金牌.cashback_1", "amount_fen": 500, "cut": 0,
                              "reason": e["cashback"][0]["reason"], "journal": e["cashback"][0]["journal"]}]
    cash = [a for a in ledger.balances(m)["accounts"] if a["account_type"] == "cash"][0]["sub_accounts"]
    assert cash["cashback"] == 500
    r = post(http, event(m, "order_refunded", amount_fen=20000, order_ref=f"{m}-X"))
    assert r["cashback"][0]["amount_fen"] == -200  # 40% refunded -> 40% of the cashback
    cash = [a for a in ledger.balances(m)["accounts"] if a["account_type"] == "cash"][0]["sub_accounts"]
    assert cash["cashback"] == 300
