"""Simulation over HTTP: a run as a job with status and report, scopes, period-end preview (no effects), shadow mode (no effects)."""
import uuid

from app.config import ROOT
from app.policy import read_root
from tests.conftest import Http, make_token
from tests.membership_factories import frozen_clock  # noqa: F401 - fixture
from tests.unit.test_simulation import YEAR_END


def _files(replace=None):
    files = read_root(ROOT)
    for name, (old, new) in (replace or {}).items():
        assert old in files[name]
        files[name] = files[name].replace(old, new, 1)
    return files


def test_simulation_run_as_job(server, http):
    body = {"candidate": {"files": _files({"policies/membership.yaml": ("{铜牌: 200,", "{铜牌: 800,")})},
            "baseline": {"files": _files()}, "events": {"records": YEAR_END},
            "from": "2024-06-01", "to": "2025-02-01"}
    writer_only_read = Http(server, make_token(["simulate:read"]))
    assert writer_only_read.post("/v1/simulations", json=body).status_code == 403
    assert Http(server, make_token(["members:write"])).get("/v1/simulations/x").status_code == 403
    writer = Http(server, make_token(["simulate:write"]))
    # without Redis the job runs inline, inside this request: two replays in spawned processes
    r = writer.session.post(server + "/v1/simulations", json=body, timeout=600,
                            headers={"Idempotency-Key": "sim-" + uuid.uuid4().hex})
    assert r.status_code == 202, r.text
    run_id = r.json()["id"]
    assert r.headers["Location"] == f"/v1/simulations/{run_id}"
    got = writer_only_read.get(f"/v1/simulations/{run_id}")
    assert got.status_code == 200
    run = got.json()
    assert run["status"] == "succeeded", run
    assert run["progress"]["done"] == run["progress"]["total"] == 2 * len(YEAR_END)
    rep = run["result"]
    assert rep["baseline"]["growth"]["deducted"] == 200 and rep["candidate"]["growth"]["deducted"] == 800
    assert rep["diff"]["levels"]["demotions"] == 1
    assert "files" not in str(rep["inputs"]) or rep["inputs"]["candidate"] == "inline files"
    page = writer_only_read.get(f"/v1/simulations/{run_id}?format=html")
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html") and "<svg" in page.text
    csv_r = writer_only_read.get(f"/v1/simulations/{run_id}?format=csv")
    assert "growth.deducted,200,800,600" in csv_r.text
    assert http.get("/v1/simulations/nope").status_code == 404
    bad = http.post("/v1/simulations", json=dict(body, to="2025-13-01"))
    assert bad.status_code == 422


def test_bad_candidate_refused_before_the_job(http):
    body = {"candidate": {"files": {"policies/membership.yaml": "kind: membership\nversion: 1\n"}},
            "from": "2024-06-01", "to": "2025-02-01", "events": {"records": []}}
    r = http.post("/v1/simulations", json=body)
    assert r.status_code == 422 and r.json()["code"] == "policy-invalid"


def test_period_end_preview_changes_nothing(http, frozen_clock):
    from tests.membership_factories import order, post
    tag = f"pv{uuid.uuid4().hex[:8]}-"
    frozen_clock(__import__("datetime").datetime(2019, 6, 10, 2, 0))
    post(http, order(tag + "a", 1500, at="2019-06-10T10:00:00+08:00"))
    post(http, order(tag + "b", 1100, at="2019-06-10T11:00:00+08:00"))
    frozen_clock(__import__("datetime").datetime(2019, 12, 20))
    r = http.get("/v1/simulations/period-end-preview", params={"at": "2021-01-01T00:00:00+08:00", "cursor": tag,
                                                                "limit": 2})
    assert r.status_code == 200, r.text
    out = r.json()
    a, b = out["items"]
    assert a["at"] == b["at"] == "2020-12-31T16:00:00Z" and a["policy_version"]
    one = http.get("/v1/simulations/period-end-preview", params={"at": "2021-01-01T00:00:00+08:00", "cursor": tag,
                                                                  "limit": 1}).json()
    assert one == {"items": [a], "next_cursor": tag + "a"}  # a full page: the next one starts past its last member
    two = http.get("/v1/simulations/period-end-preview", params={"at": "2021-01-01T00:00:00+08:00",
                                                                  "cursor": one["next_cursor"], "limit": 1}).json()
    assert two["items"] == [b]
    assert (a["member_id"], a["level"], a["growth"], a["deduct"], a["growth_after"], a["level_after"], a["demoted"]) \
        == (tag + "a", "铜牌", 1500, 200, 1300, "铜牌", False)
    assert (b["member_id"], b["deduct"], b["growth_after"], b["level_after"], b["demoted"]) \
        == (tag + "b", 200, 900, "注册", True)
    assert (a["points"], a["points_expiring"], a["points_after"]) == (1500, 1500, 0)
    assert a["points_expire_at"] == "2020-12-31T16:00:00Z"
    # nothing was kept: the members are as they were, and a second preview says the same
    view = http.get(f"/v1/members/{tag}b").json()
    assert view["growth"] == 1100 and view["level"]["name"] == "铜牌"
    assert http.get(f"/v1/members/{tag}b/history").json()["items"][0]["type"] != "deduct"
    again = http.get("/v1/simulations/period-end-preview", params={"at": "2021-01-01T00:00:00+08:00",
                                                                    "cursor": tag, "limit": 2}).json()
    assert again["items"] == out["items"]
    csv_r = http.get("/v1/simulations/period-end-preview", params={"at": "2021-01-01T00:00:00+08:00",
                                                                    "format": "csv"})
    assert csv_r.headers["Content-Type"].startswith("text/csv")
    assert f"{tag}b,铜牌,注册,True,1100,200,900,1100,1100,0," in csv_r.text


def test_shadow_mode_records_differences_and_changes_nothing(http, db_conn):
    from app.models.membership import GrowthEntry, MemberEvent, PointsAward
    from app.models.policy import Decision
    from tests.membership_factories import order, post
    files = _files({"rules/growth.yaml": ("then: [{action: award_growth, per_yuan: 1}]",
                                          "then: [{action: award_growth, per_yuan: 2}]")})
    r = http.post("/v1/simulations/shadow", json={"candidate": {"files": files}})
    assert r.status_code == 201, r.text
    shadow_id = r.json()["id"]
    try:
        from app.services.simulation import shadow
        shadow.forget()
        m = f"sh-{uuid.uuid4().hex[:10]}"
        decisions_before = Decision.select().count()
        res = post(http, order(m, 100))
        assert res["growth"]["delta"] == 100
        view = http.get(f"/v1/members/{m}").json()
        assert view["growth"] == 100 and view["points"]["balance"] == 100
        assert GrowthEntry.select().where(GrowthEntry.member_ref == m).count() == 1
        assert PointsAward.select().where(PointsAward.member_ref == m).count() == 1
        assert MemberEvent.select().where(MemberEvent.event_id.startswith("shadow-")).count() == 0
        assert GrowthEntry.select().where(GrowthEntry.event_id.startswith("shadow-")).count() == 0
        # the live event's own decisions only (growth + points), none from the two rolled-back evaluations
        assert Decision.select().count() - decisions_before == 2
        rep = http.get("/v1/simulations/shadow", params={"id": shadow_id}).json()
        rows = [i for i in rep["items"] if i["kind"] == "growth" and i["rule"] == "order_paid_per_yuan"]
        assert rows and rows[0]["members"] >= 1 and rows[0]["active_amount"] >= 100
        assert rows[0]["difference"] == rows[0]["active_amount"]  # per_yuan 2 doubles every order's growth
        assert not [i for i in rep["items"] if i["kind"] == "points"]
    finally:
        assert http.delete("/v1/simulations/shadow").status_code == 200
        from app.services.simulation import shadow
        shadow.forget()
