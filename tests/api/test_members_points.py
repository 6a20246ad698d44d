"""Points over HTTP: redemption caps (count and amount), large redemptions held for review, idempotency."""
import datetime as dt

from tests.membership_factories import frozen_clock, order, post, uid  # noqa: F401

UTC = dt.timezone.utc


def _redeem(http, m, points, rid=None, expect=201):
    r = http.post(f"/v1/members/{m}/points/redemptions", json={"redemption_id": rid or uid("rd"), "points": points,
                                                              "purpose": "mall"})
    assert r.status_code == expect, r.text
    return r.json()


def _balance(http, m):
    return http.get(f"/v1/members/{m}").json()["points"]["balance"]


def test_redemption_caps_and_review(http, frozen_clock):
    m = uid("pts")
    e = post(http, order(m, 100000))
    assert e["points"]["delta"] == 100000
    day1 = dt.datetime(2026, 11, 20, 2, tzinfo=UTC)
    frozen_clock(day1)
    rid = uid("rd")
    first = _redeem(http, m, 100, rid)
    assert first["status"] == "done" and first["journal"]
    assert _redeem(http, m, 100, rid, expect=200) == first  # same id: replay, nothing spent twice
    for _ in range(4):
        _redeem(http, m, 100)
    r = _redeem(http, m, 100, expect=422)
    assert r["code"] == "redemption-limit-exceeded" and r["cap"] == "daily" and r["limit_count"] == 5
    assert _balance(http, m) == 100000 - 500

    frozen_clock(day1 + dt.timedelta(days=1))
    held = _redeem(http, m, 60000)
    assert held["status"] == "held" and "review" in held["reason"]
    assert _balance(http, m) == 99500  # nothing spent while held
    r = http.post(f"/v1/members/{m}/points/redemptions/{held['redemption_id']}/approve", json={"note": "ok"})
    assert r.status_code == 200 and r.json()["status"] == "done", r.text
    assert _balance(http, m) == 39500
    again = http.post(f"/v1/members/{m}/points/redemptions/{held['redemption_id']}/approve", json={})
    assert again.status_code == 200 and again.json()["status"] == "done"
    assert _balance(http, m) == 39500
    r = http.post(f"/v1/members/{m}/points/redemptions/{held['redemption_id']}/reject", json={})
    assert r.status_code == 409 and r.json()["code"] == "redemption-already-decided"
    # amount cap of the day: 60000 used, 40000 more would pass the 100000 limit
    r = _redeem(http, m, 40001, expect=422)
    assert r["cap"] == "daily" and r["allowed_points"] == 40000
    # not enough points: the ledger says so
    frozen_clock(day1 + dt.timedelta(days=2))
    r = _redeem(http, m, 39000, expect=201)
    assert r["status"] == "done"
    r = _redeem(http, m, 1000, expect=409)
    assert r["code"] == "insufficient-funds"

    hist = http.get(f"/v1/members/{m}/history").json()["items"]
    redeemed = [h for h in hist if h["kind"] == "points" and h["type"] == "redeem"]
    assert len(redeemed) == 7 and all(h["policy_version"] for h in redeemed)


def test_reject_held_redemption(http, frozen_clock):
    m = uid("pts")
    post(http, order(m, 60000))
    held = _redeem(http, m, 50001)
    assert held["status"] == "held"
    r = http.post(f"/v1/members/{m}/points/redemptions/{held['redemption_id']}/reject", json={"note": "fraud?"})
    assert r.status_code == 200 and r.json()["status"] == "rejected" and "fraud?" in r.json()["reason"]
    assert _balance(http, m) == 60000
    r = http.post(f"/v1/members/{m}/points/redemptions/nope/approve", json={})
    assert r.status_code == 404 and r.json()["code"] == "redemption-not-found"


def test_global_daily_budget_cuts_and_reports(db_conn):
    """A small budget: the deferred take finds it short, the event is redone strictly and the cut reported."""
    from app.services.membership import events, policy as mp
    from tests.unit.test_membership_policy import FakeSet, ROOT, load
    docs = load(ROOT)
    for d in docs:
        if d["kind"] == "points":
            d["global_daily_budget"] = 160  # 16 shards x 10
    cfg = mp.Config(FakeSet(docs, version=mp.current().version))
    at = "2031-05-05T12:00:00+08:00"
    got = []
    for _ in range(3):
        ev = {"event_id": uid("bud"), "member_id": uid("bud"), "type": "order_paid", "amount_fen": 7000,
              "order_ref": uid("o"), "occurred_at": at}
        got.append(events.ingest(ev, "tests", cfg=cfg)[1])
    assert [g["points"]["delta"] for g in got] == [70, 70, 20]
    cut = got[2]["points"]["entries"][0]["cuts"]
    assert cut == [{"cap": "global_daily_budget", "window": "2031-05-05", "limit": 160, "used": 140, "cut": 50}]

