"""Paid plans over HTTP: subscribe from cash, renew by job, short balance -> retry -> lapse; external payment; cancel."""
import datetime as dt

import jobs
from app.services import ledger
from app.models.jobs import JobRun
from tests.membership_factories import frozen_clock, order, post, run_worker_burst, uid  # noqa: F401

UTC = dt.timezone.utc


def _recharge(member, fen):
    ledger.ensure_customer(member)
    ledger.apply_operation("recharge", {"customer": member, "amount": fen}, "tests", idempotency_key=uid("rc"),
                           client="tests")


def _cash(member):
    return [a for a in ledger.balances(member)["accounts"] if a["account_type"] == "cash"][0]["sub_accounts"]["available"]


def _renew(app, at):
    with app.app_context():
        ref = jobs.enqueue("jobs.membership.renew_plans", at=at.isoformat())
    assert ref.status == "succeeded", ref.error
    return ref.result


def _renew_on_worker(app, at, database_url, redis_url, monkeypatch):
    """The renewal job through real Redis and a real `patron worker` process."""
    monkeypatch.setitem(app.config, "REDIS_URL", redis_url)
    job_id = jobs.job_id_for("jobs.membership.renew_plans", uid("renew"))
    with app.app_context():
        assert jobs.enqueue("jobs.membership.renew_plans", at=at.isoformat(), job_id=job_id).status == "queued"
    run_worker_burst(database_url, redis_url)
    monkeypatch.setitem(app.config, "REDIS_URL", None)
    row = JobRun.get((JobRun.job == "jobs.membership.renew_plans") & (JobRun.run_key == job_id))
    assert (row.status, row.runner) == ("succeeded", "rq")


def test_subscribe_renew_short_balance_retry_then_lapse(app, http, db_conn, frozen_clock, database_url, redis_url,
                                                        monkeypatch):
    m = uid("paid")
    _recharge(m, 1500 * 2 + 700)  # two monthly fees and change
    t0 = dt.datetime(2026, 1, 15, 4, 0, tzinfo=UTC)  # 12:00 +08:00
    frozen_clock(t0)
    r = http.post(f"/v1/members/{m}/subscriptions", json={"plan": "yule_monthly"}, key=uid("k"))
    assert r.status_code == 201, r.text
    sub = r.json()
    assert sub["status"] == "active" and sub["current_period"]["end"] == "2026-02-15T04:00:00Z"
    # same Idempotency-Key -> same answer, no second charge
    r2 = http.post(f"/v1/members/{m}/subscriptions", json={"plan": "yule_monthly"},
                   headers={"Idempotency-Key": r.request.headers["Idempotency-Key"]})
    assert r2.status_code == 201 and r2.json() == sub
    assert _cash(m) == 3700 - 1500
    r3 = http.post(f"/v1/members/{m}/subscriptions", json={"plan": "yule_monthly"}, key=uid("k"))
    assert r3.status_code == 409 and r3.json()["code"] == "already-subscribed"

    view = http.get(f"/v1/members/{m}").json()
    assert view["paid"]["active"] and view["paid"]["paid_level"] == "鱼乐卡会员"
    assert view["paid"]["subscription"]["renews_at"] == "2026-02-15T04:00:00Z"
    assert view["service"]["queue"] == "vip"
    # ladder mode: paid members earn growth x1.5
    e = post(http, order(m, 100))
    assert e["paid"] and e["growth"]["delta"] == 150 and e["growth"]["entries"][0]["multiplier_pct"] == 150

    # too early: nothing happens
    assert _renew(app, dt.datetime(2026, 2, 1, tzinfo=UTC))["renewed"] == 0
    # 24 h before the end: renewed from cash (by a real RQ worker)
    _renew_on_worker(app, dt.datetime(2026, 2, 14, 5, 0, tzinfo=UTC), database_url, redis_url, monkeypatch)
    assert _cash(m) == 3700 - 3000
    subs = http.get(f"/v1/members/{m}/subscriptions").json()["subscriptions"]
    assert [(p["start"], p["end"], p["kind"]) for p in subs[0]["periods"]] == [
        ("2026-01-15T04:00:00Z", "2026-02-15T04:00:00Z", "subscribe"),
        ("2026-02-15T04:00:00Z", "2026-03-15T04:00:00Z", "renew")]

    # next renewal: 700 < 1500 -> failure, retry 12 h later, failure again -> lapses at the period end
    first = _renew(app, dt.datetime(2026, 3, 14, 4, 30, tzinfo=UTC))
    assert first == {"renewed": 0, "failed": 1, "lapsed": 0, "expired": 0}
    sub = http.get(f"/v1/members/{m}").json()["paid"]["subscription"]
    assert sub["renew_attempts"] == 1 and sub["next_attempt_at"] == "2026-03-14T16:30:00Z"
    assert sub["last_failure"].startswith("insufficient-funds")
    assert _renew(app, dt.datetime(2026, 3, 14, 10, 0, tzinfo=UTC))["failed"] == 0  # retry not due yet
    assert _renew(app, dt.datetime(2026, 3, 14, 16, 30, tzinfo=UTC))["failed"] == 1
    assert _renew(app, dt.datetime(2026, 3, 15, 3, 0, tzinfo=UTC)) == {"renewed": 0, "failed": 0, "lapsed": 0,
                                                                         "expired": 0}
    # benefits stay on until the exact end of the paid period...
    frozen_clock(dt.datetime(2026, 3, 15, 3, 59, 59, tzinfo=UTC))
    assert http.get(f"/v1/members/{m}").json()["paid"]["active"] is True
    # ...and are off at the boundary, even before the job marks the plan lapsed
    frozen_clock(dt.datetime(2026, 3, 15, 4, 0, tzinfo=UTC))
    view = http.get(f"/v1/members/{m}").json()
    assert view["paid"]["active"] is False and view["service"]["queue"] != "vip"
    assert _renew(app, dt.datetime(2026, 3, 15, 4, 5, tzinfo=UTC))["lapsed"] == 1
    subs = http.get(f"/v1/members/{m}/subscriptions").json()["subscriptions"]
    assert subs[0]["status"] == "lapsed" and subs[0]["ended_at"] == "2026-03-15T04:00:00Z"
    assert _cash(m) == 700  # nothing taken by the failed attempts
    assert any(o["plan"] == "yule_monthly" for o in view["offers"])  # the upgrade is on offer again


def test_subscribe_needs_balance_or_external_payment(http, db_conn, frozen_clock):
    m = uid("paid")
    frozen_clock(dt.datetime(2026, 5, 1, tzinfo=UTC))
    r = http.post(f"/v1/members/{m}/subscriptions", json={"plan": "yule_monthly"}, key=uid("k"))
    assert r.status_code == 409 and r.json()["code"] == "insufficient-funds"
    assert http.get(f"/v1/members/{m}/subscriptions").json()["subscriptions"] == []
    r = http.post(f"/v1/members/{m}/subscriptions", json={"plan": "nope"}, key=uid("k"))
    assert r.status_code == 422 and r.json()["code"] == "unknown-plan"
    r = http.post(f"/v1/members/{m}/subscriptions", json={"plan": "yule_monthly", "payment": "external"}, key=uid("k"))
    assert r.status_code == 422
    r = http.post(f"/v1/members/{m}/subscriptions", json={"plan": "yule_quarterly", "payment": "external",
                                                          "payment_ref": "PAY-1", "auto_renew": False}, key=uid("k"))
    assert r.status_code == 201, r.text
    assert r.json()["current_period"]["end"] == "2026-08-01T00:00:00Z"
    assert r.json()["renews_at"] is None
    assert _cash(m) == 0  # external money in, plan fee out


def test_cancel_keeps_benefits_until_period_end_then_expires(app, http, db_conn, frozen_clock):
    m = uid("paid")
    _recharge(m, 1500)
    frozen_clock(dt.datetime(2026, 6, 1, tzinfo=UTC))
    assert http.post(f"/v1/members/{m}/subscriptions", json={"plan": "yule_monthly"}, key=uid("k")).status_code == 201
    r = http.post(f"/v1/members/{m}/subscriptions/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled" and r.json()["auto_renew"] is False
    assert _renew(app, dt.datetime(2026, 6, 30, 12, tzinfo=UTC)) == {"renewed": 0, "failed": 0, "lapsed": 0,
                                                                       "expired": 0}
    assert http.get(f"/v1/members/{m}").json()["paid"]["active"] is True
    assert _renew(app, dt.datetime(2026, 7, 1, tzinfo=UTC))["expired"] == 1
    frozen_clock(dt.datetime(2026, 7, 1, tzinfo=UTC))
    assert http.get(f"/v1/members/{m}").json()["paid"]["active"] is False
    assert http.post(f"/v1/members/{m}/subscriptions/cancel").status_code == 404


def test_plan_period_end_is_read_from_the_clock_without_the_job(app, http, db_conn, frozen_clock):
    """Hardening #9 item 13: past the paid period's end a cancelled subscription reads expired and the member is no
    longer paid — before any renew/expire job has run; the job then only records it."""
    from app.models.membership import Subscription
    m = uid("paid")
    _recharge(m, 1500)
    frozen_clock(dt.datetime(2026, 6, 1, tzinfo=UTC))
    assert http.post(f"/v1/members/{m}/subscriptions", json={"plan": "yule_monthly"}, key=uid("k")).status_code == 201
    assert http.post(f"/v1/members/{m}/subscriptions/cancel").status_code == 200
    subs = lambda: http.get(f"/v1/members/{m}/subscriptions").json()["subscriptions"][0]  # noqa: E731
    assert subs()["status"] == "cancelled" and http.get(f"/v1/members/{m}").json()["paid"]["active"] is True
    end = Subscription.get(Subscription.member_ref == m).current_end
    frozen_clock(end.replace(tzinfo=UTC) + dt.timedelta(seconds=1))  # no job runs
    s1 = subs()
    assert (s1["status"], s1["ended_at"], s1["renews_at"]) == ("expired", s1["current_period"]["end"], None)
    view = http.get(f"/v1/members/{m}").json()["paid"]
    assert view["active"] is False and view["subscription"] is None
    assert Subscription.get(Subscription.member_ref == m).status == "cancelled"  # nothing materialised yet
    assert http.post(f"/v1/members/{m}/subscriptions/cancel").status_code == 404
    assert _renew(app, end.replace(tzinfo=UTC) + dt.timedelta(seconds=2))["expired"] == 1  # the job records it
    assert subs()["status"] == "expired"
