"""The seed's other ladder shapes, shipped as samples, over a scripted year over HTTP: QQ active days, 携程 base points,
滴滴 this month's spend with a monthly reset; plus events out of order."""
import datetime as dt
from pathlib import Path

import pytest

import jobs
from app.services import ledger
from tests.membership_factories import event, frozen_clock, order, post, uid  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent.parent
TZ8 = dt.timezone(dt.timedelta(hours=8))


def apply_sample(http, name):
    active = http.get("/v1/policies/active?files=1").json()
    files = dict(active["files"])
    for sub in ("policies", "rules"):
        for path in (ROOT / "docs" / "samples" / name / sub).glob("*.yaml"):
            files[f"{sub}/{path.name}"] = path.read_text(encoding="utf-8")
    r = http.post("/v1/policies/apply", json={"files": files, "note": f"sample {name}"})
    assert r.status_code == 200, r.text
    return active


@pytest.fixture()
def sample(http):
    applied = []

    def use(name):
        applied.append(apply_sample(http, name))
    yield use
    if applied:
        original = applied[0]
        assert http.post("/v1/policies/apply", json={"files": original["files"], "note": "restore"}).status_code == 200


def _level(http, m):
    return http.get(f"/v1/members/{m}").json()["level"]["name"]


def _batch(http, events):
    r = http.post("/v1/member-events/batch", json={"events": events})
    assert r.status_code == 200, r.text
    assert r.json()["rejected"] == 0, r.text
    return r.json()["items"]


def test_qq_active_days_over_a_year(http, db_conn, sample, frozen_clock):
    sample("qq")
    m = uid("qq")
    day = dt.datetime(2025, 1, 1, 9, tzinfo=TZ8)
    seen = {}
    while day.year == 2025:
        month = day.month
        evs = []
        while day.month == month:
            evs.append(event(m, "active_day", at=day.isoformat()))
            day += dt.timedelta(days=1)
        frozen_clock(day)
        _batch(http, evs)
        seen[month] = (http.get(f"/v1/members/{m}").json()["growth"], _level(http, m))
    assert seen[1] == (31, "3级☆☆☆")
    assert seen[2] == (59, "4级☾")
    assert seen[6] == (181, "8级☾☾")
    assert seen[12] == (365, "16级☀")
    # a second active day on one day is cut by the daily cap, and the cut is named
    frozen_clock(dt.datetime(2026, 1, 1, 10, tzinfo=TZ8))
    first = post(http, event(m, "active_day", at="2026-01-01T09:00:00+08:00"))
    again = post(http, event(m, "active_day", at="2026-01-01T20:00:00+08:00"))
    assert first["growth"]["delta"] == 1 and again["growth"]["delta"] == 0
    assert again["growth"]["entries"][0]["cuts"][0]["cap"] == "one_active_day_a_day"
    view = http.get(f"/v1/members/{m}").json()
    assert view["next_level"] == {"level": "32级☀☀", "threshold": 1152, "needed": 1152 - 366,
                                  "progress_pct": (366 - 320) * 100 // (1152 - 320)}


def test_ctrip_base_points_over_a_year(http, db_conn, sample, frozen_clock):
    sample("ctrip")
    m = uid("ctrip")
    levels = {}
    for month in range(1, 13):
        at = dt.datetime(2025, month, 10, 12, tzinfo=TZ8)
        frozen_clock(at)
        post(http, order(m, 500, at=at.isoformat(), attributes={"product": "hotel"}))
        e = post(http, order(m, 300, at=at.isoformat(), attributes={"product": "mall_goods"}))
        assert e["growth"]["delta"] == 0  # not a travel product: no base points
        levels[month] = (http.get(f"/v1/members/{m}").json()["growth"], _level(http, m))
    assert levels[1] == (500, "普通会员")
    assert levels[2] == (1000, "黄金贵宾")
    assert levels[6] == (3000, "铂金贵宾")
    assert levels[12] == (6000, "铂金贵宾")
    # a big flight order in December, then half of it refunded: base points follow the money
    frozen_clock(dt.datetime(2025, 12, 20, 12, tzinfo=TZ8))
    ref = uid("fl")
    post(http, order(m, 5000, at="2025-12-20T12:00:00+08:00", order_ref=ref, attributes={"product": "flight"}))
    assert _level(http, m) == "钻石贵宾"
    r = post(http, event(m, "order_refunded", at="2025-12-21T12:00:00+08:00", amount_fen=250000, order_ref=ref))
    assert r["growth"]["delta"] == -2500
    assert r["level"]["level"] == "铂金贵宾" and r["level"]["change"]["kind"] == "demotion"
    hotel = http.post(f"/v1/members/{m}/checkout-benefits",
                      json={"items": [{"sku": "H", "price_fen": 100000, "category": "hotel"}]}).json()
    assert [(d["benefit"], d["amount_fen"]) for d in hotel["discounts"] if d["applied"]] == [("hotel_95", 5000)]


def _run(app, path, **kw):
    with app.app_context():
        ref = jobs.enqueue(path, job_id=jobs.job_id_for(path, uid("run")), **kw)
    assert ref.status == "succeeded", ref.error
    return ref.result


def test_didi_monthly_spend_with_monthly_reset(app, http, db_conn, sample, frozen_clock):
    sample("didi")
    m = uid("didi")
    spend = {1: 150, 2: 400, 3: 0, 4: 900, 5: 2500, 6: 50, 7: 300, 8: 800, 9: 100, 10: 2000, 11: 0, 12: 99}
    expected = {0: "普通会员", 50: "普通会员", 99: "普通会员", 100: "白银会员", 150: "白银会员", 300: "黄金会员",
                400: "黄金会员", 800: "铂金会员", 900: "铂金会员", 2000: "钻石会员", 2500: "钻石会员"}
    for month in range(1, 13):
        due = dt.datetime(2025, month, 1, 0, 10, tzinfo=TZ8)
        frozen_clock(due)
        out = _run(app, "jobs.membership.deduct_growth", at=due.isoformat())
        view = http.get(f"/v1/members/{m}").json() if month > 1 else None
        if view:
            assert view["growth"] == 0 and view["level"]["name"] == "普通会员", (month, view["growth"])
            assert out["members"] >= 1
        if spend[month]:
            at = dt.datetime(2025, month, 15, 20, tzinfo=TZ8)
            frozen_clock(at)
            post(http, order(m, spend[month], at=at.isoformat()))
        else:
            post(http, event(m, "sign_in", at=dt.datetime(2025, month, 15, tzinfo=TZ8).isoformat())) \
                if month == 3 else None
        if month == 3 and not spend[month]:
            continue
        v = http.get(f"/v1/members/{m}").json()
        assert (v["growth"], v["level"]["name"]) == (spend[month], expected[spend[month]]), month
    hist = http.get(f"/v1/members/{m}/history?limit=500").json()["items"]
    resets = [h for h in hist if h["kind"] == "growth" and h["type"] == "deduct"]
    assert len(resets) == 11 and {h["rule"] for h in resets} == {"membership.deduction.reset"}
    demotions = [h for h in hist if h["kind"] == "level" and h["type"] == "demotion"]
    assert len(demotions) >= 8 and all(h["policy_version"] for h in demotions)
    # reset at 00:00 even when the job runs later: spend between 00:00 and the job is kept
    frozen_clock(dt.datetime(2026, 1, 1, 0, 5, tzinfo=TZ8))
    post(http, order(m, 120, at="2026-01-01T00:05:00+08:00"))
    frozen_clock(dt.datetime(2026, 1, 1, 0, 10, tzinfo=TZ8))
    _run(app, "jobs.membership.deduct_growth", at="2026-01-01T00:10:00+08:00")
    v = http.get(f"/v1/members/{m}").json()
    assert (v["growth"], v["level"]["name"]) == (120, "白银会员")
    # a late event dated in a closed month is booked in the open month, the same way on a retry
    frozen_clock(dt.datetime(2026, 1, 3, 12, tzinfo=TZ8))
    late = order(m, 200, at="2025-12-20T12:00:00+08:00")
    e = post(http, late)
    assert e["late"] == {"occurred_at": "2025-12-20T04:00:00Z", "booked_at": "2026-01-03T04:00:00Z",
                         "closed_at": "2025-12-31T16:00:00Z", "rule": "membership.late_events.closed_period.book_now"}
    assert e["growth"]["delta"] == 200 and e["level"]["level"] == "黄金会员"
    replay = post(http, late, expect=200)
    assert replay["late"] == e["late"] and replay["growth"] == e["growth"]


def test_refund_before_its_payment_claws_back_when_the_payment_arrives(http, db_conn, frozen_clock):
    m = uid("ooo")
    ref = uid("ord")
    frozen_clock(dt.datetime(2026, 5, 1, 4, tzinfo=dt.timezone.utc))
    post(http, order(m, 100, at="2026-05-01T10:00:00+08:00"))  # some other growth first
    r = post(http, event(m, "order_refunded", at="2026-05-02T10:00:00+08:00", amount_fen=10000, order_ref=ref))
    assert r["growth"]["delta"] == 0 and r["points"]["delta"] == 0  # nothing earned yet on this order
    paid_event = order(m, 300, at="2026-05-01T12:00:00+08:00", order_ref=ref)
    p = post(http, paid_event)
    assert p["growth"]["delta"] == 300 and p["points"]["delta"] == 300
    before = p["refunds_before_payment"]
    assert before["rule"] == "membership.refund_before_payment" and before["refunded_fen"] == 10000
    assert [e["delta"] for e in before["growth"]] == [-100]
    assert [e["points"] for e in before["points"]] == [-100]
    view = http.get(f"/v1/members/{m}").json()
    assert view["growth"] == 100 + 300 - 100 and view["points"]["balance"] == 100 + 300 - 100
    # a retry of the payment answers the same and claws back nothing more
    again = post(http, paid_event, expect=200)
    assert again["refunds_before_payment"] == before
    assert http.get(f"/v1/members/{m}").json()["growth"] == 300
    # a later refund of the rest takes only what is left
    r2 = post(http, event(m, "order_refunded", at="2026-05-03T10:00:00+08:00", amount_fen=20000, order_ref=ref))
    assert r2["growth"]["delta"] == -200
    assert ledger.reconcile()["ok"]
