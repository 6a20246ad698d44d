"""Member center over HTTP: masked profile, paid ladder with its benefits and upgrade offer, mall services and goods."""
import logging

from app.services import ledger
from tests.membership_factories import order, post, uid

PHONE = "13812345678"


def _cash(member, fen):
    ledger.ensure_customer(member)
    ledger.apply_operation("recharge", {"customer": member, "amount": fen}, "tests", idempotency_key=uid("rc"),
                           client="tests")


def test_center_masks_the_phone_in_responses_and_logs(http, db_conn, caplog):
    caplog.set_level(logging.DEBUG)
    m = uid("ctr")
    post(http, order(m, 3500))
    r = http.put(f"/v1/members/{m}/profile", json={"nickname": "小鱼", "phone": PHONE})
    assert r.status_code == 200, r.text
    assert r.json() == {"nickname": "小鱼", "phone_masked": "138****5678", "has_phone": True}
    bad = http.put(f"/v1/members/{m}/profile", json={"phone": "call me 555"})
    assert bad.status_code == 422 and "call me" not in bad.text
    red = http.post(f"/v1/members/{m}/mall/redemptions", json={"redemption_id": uid("rd"), "item": "red_packet_5"})
    assert red.status_code == 201, red.text
    c = http.get(f"/v1/members/{m}/center")
    assert c.status_code == 200, c.text
    center = c.json()
    assert PHONE not in c.text and center["profile"]["phone_masked"] == "138****5678"
    assert center["level"]["name"] == "银牌" and center["next_level"]["level"] == "金牌"
    assert center["points"]["balance"] == 3000
    assert [p["points"] for p in center["points"]["by_expiry"]] == [3000]
    assert center["red_packets"]["balance_fen"] == 500 and center["vouchers"] == []
    assert center["paid"]["active"] is False
    assert {o["plan"] for o in center["offers"] if "plan" in o} == {"yule_monthly", "yule_quarterly"}
    assert PHONE not in caplog.text


def test_paid_ladder_benefits_and_upgrade_offer(http, db_conn):
    m = uid("vip")
    _cash(m, 10000)
    r = http.post(f"/v1/members/{m}/subscriptions", json={"plan": "yule_quarterly"}, key=uid("k"))
    assert r.status_code == 201, r.text
    center = http.get(f"/v1/members/{m}/center").json()
    ladder = center["paid"]["ladder"]
    assert (ladder["basis"], ladder["months_paid"], ladder["level"]) == ("months", 3, "鱼乐卡·银卡")
    paid_level = [b for b in center["benefits"] if b["source"] == "paid_level:鱼乐卡·银卡"]
    assert {b["name"] for b in paid_level} == {"vip_price_93", "vip_zone"}
    up = [o for o in center["offers"] if o.get("kind") == "paid_level_upgrade"]
    assert up and up[0]["paid_level"] == "鱼乐卡·金卡" and up[0]["needed"] == 9
    assert {a["name"] for a in up[0]["adds"]} == {"vip_price_88", "svc_dedicated"}
    # the VIP price (paid level) beats the card's own 9折 on a large cart
    out = http.post(f"/v1/members/{m}/checkout-benefits", json={"items": [{"sku": "A", "price_fen": 200000}]}).json()
    applied = [d for d in out["discounts"] if d["applied"]]
    assert [(d["benefit"], d["amount_fen"], d["rule"]) for d in applied] == [
        ("vip_price_93", 14000, "benefits.paid_levels.鱼乐卡·银卡.vip_price_93")]


def test_mall_eligibility_services_and_goods_cancelled_before_fulfilment(http, db_conn):
    low = uid("low")
    post(http, order(low, 500))
    r = http.post(f"/v1/members/{low}/mall/redemptions",
                  json={"redemption_id": uid("rd"), "item": "priority_service_30d"})
    assert r.status_code == 403 and r.json()["code"] == "mall-not-eligible"
    m = uid("mall")
    post(http, order(m, 12000))  # 金牌, 12000 x1 points (注册 when earned)
    lots = http.get(f"/v1/members/{m}").json()["points"]["lots"]
    svc = http.post(f"/v1/members/{m}/mall/redemptions",
                    json={"redemption_id": uid("rd"), "item": "priority_service_30d"})
    assert svc.status_code == 201, svc.text
    assert svc.json()["issued"]["benefit"] == "svc_priority"
    granted = [b for b in http.get(f"/v1/members/{m}/center").json()["benefits"]
               if b.get("source", "").startswith("mall:")]
    assert [b["name"] for b in granted] == ["svc_priority"]
    items = {i["code"]: i for i in http.get(f"/v1/mall/items?member_id={m}").json()["items"]}
    stock = items["mug"]["stock_left"]
    mug = http.post(f"/v1/members/{m}/mall/redemptions", json={"redemption_id": uid("rd"), "item": "mug"}).json()
    assert mug["status"] == "pending_fulfilment"
    assert http.get("/v1/mall/items").json()["items"][-1]["stock_left"] == stock - 1
    c = http.post(f"/v1/members/{m}/mall/redemptions/{mug['redemption_id']}/cancel", json={"note": "changed mind"})
    assert c.status_code == 200, c.text
    assert c.json()["status"] == "cancelled"
    assert c.json()["issued"]["returned"][0]["lot_id"] == lots[0]["lot_id"]  # back into the original lot
    assert http.get(f"/v1/members/{m}").json()["points"]["balance"] == 12000 - 3000
    assert {i["code"]: i for i in http.get("/v1/mall/items").json()["items"]}["mug"]["stock_left"] == stock
    shipped = http.post(f"/v1/members/{m}/mall/redemptions/{mug['redemption_id']}/fulfil", json={"note": "SF1"})
    assert shipped.status_code == 409, shipped.text  # cancelled goods are never shipped
    assert shipped.json()["code"] == "redemption-not-fulfillable" and shipped.json()["state"] == "cancelled"
    # a second mug in the same year is refused by the yearly cap only if the first counted; fulfilled goods stay
    mug2 = http.post(f"/v1/members/{m}/mall/redemptions", json={"redemption_id": uid("rd"), "item": "mug"})
    assert mug2.status_code == 422 and mug2.json()["cap"] == "mug_per_member_yearly"
    assert ledger.reconcile()["ok"]


def test_goods_fulfilled_once_and_offers_of_a_member(http, db_conn):
    m = uid("ship")
    post(http, order(m, 12000))
    mug = http.post(f"/v1/members/{m}/mall/redemptions", json={"redemption_id": uid("rd"), "item": "mug"}).json()
    assert mug["status"] == "pending_fulfilment" and mug["issued"] == {"fulfilment": "pending"}
    url = f"/v1/members/{m}/mall/redemptions/{mug['redemption_id']}"
    r = http.post(url + "/fulfil", json={"note": "SF123"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "fulfilled" and r.json()["issued"] == {"fulfilment": "shipped", "note": "SF123"}
    again = http.post(url + "/fulfil", json={"note": "SF123"})  # a new key: already fulfilled, same answer
    assert again.status_code == 200 and again.json() == r.json()
    late = http.post(url + "/cancel", json={"note": "too late"})  # shipped goods are not cancelled
    assert late.status_code == 409, late.text
    assert late.json()["code"] == "redemption-not-cancellable" and late.json()["state"] == "fulfilled"
    offers = http.get(f"/v1/members/{m}/offers")
    assert offers.status_code == 200, offers.text
    view = http.get(f"/v1/members/{m}").json()
    assert offers.json() == {"member_id": m, "policy_version": view["policy_version"], "offers": view["offers"]}
    assert offers.json()["offers"] and all(o["adds"] for o in offers.json()["offers"])
