"""A member's year over HTTP across a year end: orders, refunds, sign-ins, deduction, demotion, points expiry."""
import datetime as dt

import jobs
from app.models.membership import GrowthEntry, Member
from tests.membership_factories import event, frozen_clock, order, post, uid  # noqa: F401 (fixture)

TZ8 = dt.timezone(dt.timedelta(hours=8))


def _run(app, path, **kw):
    with app.app_context():
        ref = jobs.enqueue(path, job_id=jobs.job_id_for(path, uid("run")), **kw)
    assert ref.status == "succeeded", ref.error
    return ref.result


def test_a_members_year_across_the_year_end(app, http, db_conn, frozen_clock):
    # A replay: the clock stands at each event's time, so the ledger decides which points lots are live
    # then (not today), and the test does not depend on the day it runs.
    def post_at(body):
        frozen_clock(dt.datetime.fromisoformat(body["occurred_at"]))
        return post(http, body)

    def run_at(path, instant):
        frozen_clock(dt.datetime.fromisoformat(instant))
        return _run(app, path, at=instant)

    m = uid("year")
    # 2024-12-20: joins with a sign-in; its points lot ends with natural year 2025 (years_after: 1)
    e0 = post_at(event(m, "sign_in", at="2024-12-20T10:00:00+08:00"))
    assert e0["growth"]["delta"] == 5 and e0["points"]["delta"] == 5
    assert e0["points"]["entries"][0]["expires_at"] == "2025-12-31T16:00:00Z"  # 2026-01-01 00:00 +08:00

    run_at("jobs.membership.deduct_growth", "2025-01-01T00:10:00+08:00")  # 注册: nothing to deduct

    # 2025: orders, two sign-ins on one day (cap), a partial refund, another order
    e1 = post_at(order(m, 5000, at="2025-02-01T12:00:00+08:00", order_ref=f"{m}-A"))
    assert e1["growth"]["delta"] == 5000
    assert e1["level"]["change"]["to"] == "银牌" and e1["level"]["change"]["kind"] == "promotion"
    assert e1["points"]["delta"] == 5000  # 注册 at the time: x1
    e2 = post_at(event(m, "sign_in", at="2025-03-01T09:00:00+08:00"))
    assert e2["growth"]["delta"] == 5
    pts = e2["points"]["entries"][0]
    assert (pts["base"], pts["multiplier_pct"], pts["points"], pts["cut"]) == (5, 120, 5, 1)  # 银牌 x1.2, cap 5/day
    assert pts["cuts"][0]["cap"] == "sign_in_daily"
    e3 = post_at(event(m, "sign_in", at="2025-03-01T20:00:00+08:00"))
    assert e3["growth"]["delta"] == 0 and e3["growth"]["entries"][0]["cut"] == 5
    assert e3["growth"]["entries"][0]["cuts"][0]["cap"] == "sign_in_daily"
    assert e3["points"]["delta"] == 0 and e3["points"]["entries"][0]["cuts"][0]["cut"] == 6
    e4 = post_at(order(m, 6000, at="2025-04-01T12:00:00+08:00", order_ref=f"{m}-B"))
    assert e4["growth"]["balance"] == 11010 and e4["level"]["level"] == "金牌"
    assert e4["points"]["delta"] == 7200
    e5 = post_at(event(m, "order_refunded", at="2025-05-01T12:00:00+08:00", amount_fen=300000,
                          order_ref=f"{m}-B"))
    assert e5["growth"]["delta"] == -3000  # half of the order refunded: half of its growth
    assert e5["level"]["change"]["kind"] == "demotion" and e5["level"]["level"] == "银牌"
    assert e5["points"]["delta"] == -3600
    e6 = post_at(order(m, 3000, at="2025-06-01T12:00:00+08:00", order_ref=f"{m}-C"))
    assert e6["growth"]["balance"] == 11010 and e6["level"]["level"] == "金牌"
    assert e6["points"]["delta"] == 3600

    # the yearly deduction (1 January, 金牌 -2000) demotes to 银牌
    out = run_at("jobs.membership.deduct_growth", "2026-01-01T00:10:00+08:00")
    assert out["members"] >= 1
    view = http.get(f"/v1/members/{m}").json()
    assert view["growth"] == 9010 and view["level"]["name"] == "银牌"
    assert view["next_level"] == {"level": "金牌", "threshold": 10000, "needed": 990,
                                  "progress_pct": (9010 - 2000) * 100 // 8000}
    # running the job again (or a racing worker) deducts nothing more
    run_at("jobs.membership.deduct_growth", "2026-01-02T00:10:00+08:00")
    assert http.get(f"/v1/members/{m}").json()["growth"] == 9010

    hist = http.get(f"/v1/members/{m}/history?limit=500").json()["items"]
    deductions = [h for h in hist if h["kind"] == "growth" and h["type"] == "deduct"]
    assert [(d["delta"], d["at"]) for d in deductions] == [(-2000, "2025-12-31T16:00:00Z"), (0, "2024-12-31T16:00:00Z")]
    assert deductions[0]["rule"] == "membership.deduction.fixed_per_level.金牌"
    demotions = [h for h in hist if h["kind"] == "level" and h["type"] == "demotion"]
    assert len(demotions) == 2 and "deduction of 2000" in demotions[0]["reason"]
    assert all(h["policy_version"] for h in hist)

    # 2026: a new day window; points of 2025 end with 2026 (expire 2027-01-01 00:00 +08:00)
    e7 = post_at(event(m, "sign_in", at="2026-01-05T09:00:00+08:00"))
    assert e7["growth"]["delta"] == 5 and e7["points"]["delta"] == 5
    assert e7["points"]["entries"][0]["expires_at"] == "2027-12-31T16:00:00Z"

    # growth is the sum of its explained entries
    total = sum(e.delta for e in GrowthEntry.select().where(GrowthEntry.member_ref == m))
    assert total == Member.get(Member.member_ref == m).growth == 9015

    # points: the 2025-05-01 claw-back of 3600 drew first on the 2024 lot (5, then still live and the
    # earliest to expire), the rest on order A's lot; so on 2026-01-05 the lot expiry job finds nothing of
    # this member left to expire, and the 2026 lots hold everything but the 2027 one.
    _run(app, "jobs.ledger.expire_lots")
    lots = http.get(f"/v1/members/{m}").json()["points"]["lots"]
    by_expiry = {}
    for lot in lots:
        by_expiry[lot["expires_at"]] = by_expiry.get(lot["expires_at"], 0) + lot["remaining"]
    assert by_expiry == {"2026-12-31T16:00:00Z": (5000 - 3595) + 5 + 7200 + 3600,
                         "2027-12-31T16:00:00Z": 5}
    assert http.get(f"/v1/members/{m}").json()["points"]["balance"] == 12215
    from app.services import ledger
    points = [a for a in ledger.balances(m)["accounts"] if a["asset"] == "POINTS"][0]
    assert points["sub_accounts"]["available"] == 12215  # the ledger agrees
