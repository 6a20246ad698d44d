"""Membership KPIs over HTTP (JSON and CSV) on a small, hand-checked history in 2019; monthly coupons job."""
import csv
import datetime as dt
import io

import jobs
from app.services import ledger
from tests.membership_factories import event, frozen_clock, order, post, uid  # noqa: F401

UTC = dt.timezone.utc


def test_kpis_per_month(http, db_conn, frozen_clock):
    a, b, c = uid("kpiA"), uid("kpiB"), uid("kpiC")
    post(http, order(a, 100, at="2019-01-05T12:00:00+08:00"))
    post(http, order(b, 50, at="2019-01-10T12:00:00+08:00"))
    post(http, event(c, "sign_in", at="2019-02-01T12:00:00+08:00"))
    post(http, order(c, 1000, at="2019-02-02T12:00:00+08:00"))
    post(http, order(a, 200, at="2019-02-03T12:00:00+08:00"))
    ledger.ensure_customer(a)
    ledger.apply_operation("recharge", {"customer": a, "amount": 1500}, "tests", idempotency_key=uid("rc"),
                           client="tests")
    frozen_clock(dt.datetime(2019, 2, 10, 4, tzinfo=UTC))
    assert http.post(f"/v1/members/{a}/subscriptions", json={"plan": "yule_monthly"}, key=uid("k")).status_code == 201
    frozen_clock(None)
    assert post(http, order(a, 300, at="2019-02-20T12:00:00+08:00"))["paid"] is True
    post(http, event(b, "sign_in", at="2019-03-01T12:00:00+08:00"))

    r = http.get("/v1/member-kpis?from=2019-01&to=2019-03")
    assert r.status_code == 200, r.text
    rows = {p["period"]: p for p in r.json()["periods"]}
    jan, feb, mar = rows["2019-01"], rows["2019-02"], rows["2019-03"]
    assert (jan["active_members"], jan["retention_rate"], jan["buyers"], jan["repurchase_rate"]) == (2, None, 2, 0.0)
    assert (jan["gmv_fen"], jan["paid_gmv_share"], jan["paid_conversion_rate"]) == (15000, 0.0, 0.0)
    assert (feb["active_members"], feb["retained_members"], feb["retention_rate"]) == (2, 1, 0.5)
    assert (feb["buyers"], feb["repeat_buyers"], feb["repurchase_rate"]) == (2, 1, 0.5)
    assert (feb["gmv_fen"], feb["paid_gmv_fen"], feb["paid_gmv_share"]) == (150000, 30000, 0.2)
    assert (feb["paid_members"], feb["new_paid_members"], feb["paid_conversion_rate"]) == (1, 1, 0.5)
    assert (mar["active_members"], mar["retention_rate"], mar["repurchase_rate"], mar["paid_members"]) == (1, 0.0, None, 1)
    assert {d["level"] for d in r.json()["level_distribution"]} == {"注册", "铜牌", "银牌", "金牌", "钻石"}

    r = http.get("/v1/member-kpis?from=2019-01&to=2019-03&format=csv")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/csv")
    assert r.content.startswith(b"\xef\xbb\xbf")  # UTF-8 BOM: Excel reads the labels right
    table = list(csv.DictReader(io.StringIO(r.content.decode("utf-8-sig"))))
    assert [t["period"] for t in table] == ["2019-01", "2019-02", "2019-03"]
    assert table[1]["paid_gmv_share"] == "0.2" and table[0]["retention_rate"] == ""

    assert http.get("/v1/member-kpis?from=2019-13").status_code == 422
    assert http.get("/v1/member-kpis?from=2019-03&to=2019-01").status_code == 422
    assert http.get("/v1/member-kpis?from=2019-01&format=xml").status_code == 422


def test_monthly_coupons_issued_once(app, http, db_conn):
    m = uid("cpn")
    post(http, order(m, 1000))  # 铜牌: coupon_5 monthly
    at = "2026-11-26T12:00:00+08:00"
    with app.app_context():
        first = jobs.enqueue("jobs.membership.issue_coupons", at=at, job_id=uid("cp"))
        second = jobs.enqueue("jobs.membership.issue_coupons", at=at, job_id=uid("cp"))
    assert first.status == "succeeded" and first.result["issued"] >= 1, first.error
    assert second.status == "succeeded"
    # include_closed: the coupon month may be over by the time this runs (an expired lot is not "open")
    vouchers = ledger.lots(m, "VOUCHER", include_closed=True)
    assert [(v["amount"], v["expires_at"]) for v in vouchers] == [(500, "2026-11-30T16:00:00Z")]


def test_cli_runs_jobs_and_prints_kpis(app, database_url):
    import os
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PATRON_DATABASE_URL=database_url, PATRON_LOG_LEVEL="WARNING")
    env.pop("PATRON_REDIS_URL", None)

    def run(*argv):
        out = subprocess.run([sys.executable, "-m", "app.cli", "membership", *argv], cwd=root, env=env,
                             capture_output=True, text=True, timeout=120)
        return out.returncode, out.stdout
    rc, out = run("kpis", "--from", "2018-01", "--csv")
    assert rc == 0 and out.splitlines()[0].startswith("\ufeffperiod,start,end,members")
    rc, out = run("run", "renew_plans", "--at", "2018-01-01T00:00:00+08:00")
    assert rc == 0 and '"renewed"' in out
    assert run("show", "nobody-" + uid())[0] == 1
