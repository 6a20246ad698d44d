"""Independent mode end to end: the second sample set applied through the policy API, then restored."""
import datetime as dt
from pathlib import Path

import pytest

from app.services import ledger
from tests.membership_factories import frozen_clock, order, post, uid  # noqa: F401

SAMPLE = Path(__file__).resolve().parents[2] / "docs" / "samples" / "independent"
UTC = dt.timezone.utc


@pytest.fixture()
def independent_set(http):
    """Swap the membership files of the active set for the independent sample; restore afterwards."""
    active = http.get("/v1/policies/active?files=1").json()
    original = active["files"]
    files = dict(original)
    for sub in ("policies", "rules"):
        for path in (SAMPLE / sub).glob("*.yaml"):
            files[f"{sub}/{path.name}"] = path.read_text(encoding="utf-8")
    r = http.post("/v1/policies/apply", json={"files": files, "note": "membership independent-mode test"})
    assert r.status_code == 200, r.text
    try:
        yield r.json()
    finally:
        back = http.post("/v1/policies/apply", json={"files": original, "note": "restore after test"})
        assert back.status_code == 200, back.text
        assert http.get("/v1/policies/active").json()["version"] == active["version"]


def test_paid_card_runs_beside_the_ladder(http, db_conn, independent_set, frozen_clock):
    m = uid("ind")
    ledger.ensure_customer(m)
    ledger.apply_operation("recharge", {"customer": m, "amount": 1000}, "tests", idempotency_key=uid("rc"),
                           client="tests")
    frozen_clock(dt.datetime(2026, 9, 1, 4, tzinfo=UTC))
    r = http.post(f"/v1/members/{m}/subscriptions", json={"plan": "yule_card"}, key=uid("k"))
    assert r.status_code == 201, r.text
    frozen_clock(None)
    e = post(http, order(m, 600, at="2026-09-02T12:00:00+08:00"))
    assert e["paid"] is True
    assert e["growth"]["delta"] == 600 and e["growth"]["entries"][0]["multiplier_pct"] == 100  # no acceleration
    assert e["points"]["delta"] == 6000 * 2  # 10 per yuan, card benefit points_x2
    assert e["points"]["entries"][0]["expires_at"] == "2027-09-02T04:00:00Z"  # rolling 12 months
    assert e["level"]["level"] == "白银会员"
    frozen_clock(dt.datetime(2026, 9, 15, tzinfo=UTC))
    view = http.get(f"/v1/members/{m}").json()
    assert view["mode"] == "independent" and view["paid"]["paid_level"] == "鱼乐卡"
    assert view["service"]["queue"] == "card-members"
    out = http.post(f"/v1/members/{m}/checkout-benefits",
                    json={"items": [{"sku": "A", "price_fen": 10000}], "shipping_fen": 800}).json()
    applied = [d for d in out["discounts"] if d["applied"]]
    assert [(d["benefit"], d["amount_fen"], d["rule"]) for d in applied] == [
        ("card_price_95", 500, "benefits.plans.yule_card.card_price_95")]
    assert out["fee_waivers"][0]["rule"] == "benefits.plans.yule_card.free_shipping"
    assert out["policy_version"] == independent_set["version"]
