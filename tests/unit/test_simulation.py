"""Simulation: a hand-computed year end, baseline = candidate gives zero difference and identical bytes,
the replay equals what the live services did member by member, generated histories are reproducible."""
import datetime as dt
import json
import secrets
import shutil

import pytest

from app.config import ROOT
from app.services import simulation
from app.services.simulation import report as sim_report
from app.services.simulation import sources


def _candidate(tmp_path, replace=None):
    """A copy of the repository's policies/ and rules/, with text replacements in given files."""
    folder = tmp_path / "candidate"
    shutil.copytree(ROOT / "policies", folder / "policies")
    shutil.copytree(ROOT / "rules", folder / "rules")
    for rel, (old, new) in (replace or {}).items():
        path = folder / rel
        text = path.read_text(encoding="utf-8")
        assert old in text, (rel, old)
        path.write_text(text.replace(old, new), encoding="utf-8")
    return str(folder)


def _write(tmp_path, records, name="events.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return str(path)


YEAR_END = [
    # A: 1,500 yuan -> growth 1500 (铜牌), 1500 points (注册 at the time: no multiplier)
    {"event_id": "A-1", "member_id": "A", "type": "order_paid", "amount_fen": 150000, "order_ref": "OA1",
     "channel": "app", "occurred_at": "2024-06-10T10:00:00+08:00"},
    # B: 500 yuan -> growth 500, stays 注册 (deduction 0 for 注册)
    {"event_id": "B-1", "member_id": "B", "type": "order_paid", "amount_fen": 50000, "order_ref": "OB1",
     "channel": "web", "occurred_at": "2024-07-01T10:00:00+08:00"},
    # C: two sign-ins on one day: growth and points caps (5 a day) cut the second one entirely
    {"event_id": "C-1", "member_id": "C", "type": "sign_in", "channel": "app",
     "occurred_at": "2024-12-31T09:00:00+08:00"},
    {"event_id": "C-2", "member_id": "C", "type": "sign_in", "channel": "app",
     "occurred_at": "2024-12-31T21:00:00+08:00"},
]


@pytest.fixture(scope="module")
def year_end(app, tmp_path_factory):
    """The year-end scenario, run once: baseline = repository policy, candidate deducts 800 from 铜牌."""
    tmp = tmp_path_factory.mktemp("sim-year-end")
    cand = _candidate(tmp, {"policies/membership.yaml": ("{铜牌: 200,", "{铜牌: 800,")})
    base = _candidate(tmp / "b")
    with app.app_context():
        return simulation.simulate({"candidate": cand, "baseline": base, "events": _write(tmp, YEAR_END),
                                    "from": "2024-06-01", "to": "2025-02-01", "workers": 2})


def test_year_end_by_hand(year_end):
    rep, rows = year_end
    b, c = rep["baseline"], rep["candidate"]
    assert b["members"] == c["members"] == 3
    assert b["levels"]["end"] == {"注册": 2, "铜牌": 1, "银牌": 0, "金牌": 0, "钻石": 0}
    assert c["levels"]["end"] == {"注册": 3, "铜牌": 0, "银牌": 0, "金牌": 0, "钻石": 0}
    assert b["levels"]["transitions"] == {"(new)": {"注册": 2, "铜牌": 1}}
    assert c["levels"]["transitions"] == {"(new)": {"注册": 3}}
    assert (b["levels"]["promotions"], b["levels"]["demotions"]) == (1, 0)
    assert (c["levels"]["promotions"], c["levels"]["demotions"]) == (1, 1)
    assert b["growth"] == {"earned": 2005, "clawed_back": 0, "deducted": 200, "cut_by_caps": 5}
    assert c["growth"] == {"earned": 2005, "clawed_back": 0, "deducted": 800, "cut_by_caps": 5}
    for side in (b, c):
        assert side["points"]["issued"] == 2005 and side["points"]["cut_by_caps"] == 5
        assert side["points"]["expired"] == 0 and side["points"]["redeemed"] == 0
        assert side["points"]["outstanding"] == 2005 and side["points"]["liability_fen"] == 2005
        assert side["caps"] == {"growth:sign_in_daily": {"hits": 1, "members": 1, "amount_cut": 5},
                                "points:sign_in_daily": {"hits": 1, "members": 1, "amount_cut": 5}}
    # monthly snapshots: July .. February; A is 铜牌 from June until the candidate's 1 January demotion
    assert [m["month"] for m in b["levels"]["monthly"]] == ["2024-07", "2024-08", "2024-09", "2024-10",
                                                          "2024-11", "2024-12", "2025-01", "2025-02"]
    assert b["levels"]["monthly"][6]["levels"]["铜牌"] == 1
    assert c["levels"]["monthly"][6]["levels"]["铜牌"] == 0
    assert c["levels"]["monthly"][5]["levels"]["铜牌"] == 1
    # coupon_5 (500 fen a month) while 铜牌: June..February (9) vs June..December (7)
    assert b["benefits"]["coupons_fen"] == 9 * 500 and c["benefits"]["coupons_fen"] == 7 * 500
    assert rep["diff"]["growth"]["deducted"] == 600
    assert rep["diff"]["levels"]["end"]["铜牌"] == -1
    assert rows == [
        {"member_id": "A", "baseline_level": "铜牌", "candidate_level": "注册", "baseline_growth": 1300,
         "candidate_growth": 700, "baseline_points": 1500, "candidate_points": 1500},
        {"member_id": "B", "baseline_level": "注册", "candidate_level": "注册", "baseline_growth": 500,
         "candidate_growth": 500, "baseline_points": 500, "candidate_points": 500},
        {"member_id": "C", "baseline_level": "注册", "candidate_level": "注册", "baseline_growth": 5,
         "candidate_growth": 5, "baseline_points": 5, "candidate_points": 5}]


def test_report_formats(year_end, tmp_path):
    rep, rows = year_end
    paths = sim_report.write(rep, rows, str(tmp_path / "out"))
    page = open(paths["report.html"], encoding="utf-8").read()
    assert "<svg" in page and "<script" not in page and "http://" not in page.replace(
        'xmlns="http://www.w3.org/2000/svg"', "")
    text = open(paths["report.txt"], encoding="utf-8").read()
    assert "growth deducted" in text and "+600" in text
    csv_text = open(paths["report.csv"], encoding="utf-8").read()
    assert "growth.deducted,200,800,600" in csv_text
    assert open(paths["members.csv"], encoding="utf-8").read().splitlines()[1] == "A,铜牌,注册,1300,700,1500,1500"


def test_same_policy_zero_diff_and_identical_bytes(app, tmp_path):
    records = sources.generate(25, 150, 11, start="2024-10-15")
    path = _write(tmp_path, records)
    folder = _candidate(tmp_path)
    spec = {"candidate": folder, "baseline": folder, "events": path, "from": "2024-11-01", "to": "2025-03-01",
            "workers": 2}
    with app.app_context():
        first, _ = simulation.simulate(spec)
        second, _ = simulation.simulate(spec)
    assert first["baseline"]["growth"]["earned"] > 0 and first["baseline"]["points"]["issued"] > 0
    assert sim_report.is_zero(first["diff"]), first["diff"]
    assert sim_report.to_json(first).encode() == sim_report.to_json(second).encode()


def test_generate_is_reproducible_and_ordered():
    a = sources.generate(30, 60, 5)
    b = sources.generate(30, 60, 5)
    assert a == b and len(a) > 0
    assert [r["occurred_at"] for r in a] == sorted(r["occurred_at"] for r in a)
    assert sources.generate(30, 60, 6) != a
    assert {r["type"] for r in a} >= {"order_paid", "sign_in"}


def test_simulation_equals_live(app, db_conn, tmp_path):
    """Replay a history in a throwaway database and live in the test database: same levels, growth, points."""
    from app import policy
    from app.errors import Problem
    from app.models.membership import Member
    from app.platform import clock, timefmt
    from app.services.membership import events, growth, ledger_port, plans, points
    from app.services.membership import policy as mp
    from app.services.simulation.replay import Ticks
    import jobs.ledger as jl
    prefix = f"eq{secrets.token_hex(3)}-"
    records = sources.generate(12, 240, 3, start="2019-06-01") + [
        # a paid plan (growth x1.5 while it lasts; the renewal finds no balance and the plan lapses)
        {"type": "plan_subscribed", "member_id": "m0000001", "plan": "yule_monthly", "payment_ref": "x-pay",
         "auto_renew": True, "occurred_at": "2019-06-03T12:00:00+08:00"},
        {"event_id": "x-o1-paid", "member_id": "m0000001", "type": "order_paid", "amount_fen": 300000,
         "order_ref": "x-o1", "channel": "app", "occurred_at": "2019-06-10T12:00:00+08:00"},
        # a refund that arrives before its payment
        {"event_id": "x-o2-refund", "member_id": "m0000002", "type": "order_refunded", "amount_fen": 20000,
         "order_ref": "x-o2", "occurred_at": "2019-07-01T12:00:00+08:00"},
        {"event_id": "x-o2-paid", "member_id": "m0000002", "type": "order_paid", "amount_fen": 80000,
         "order_ref": "x-o2", "channel": "app", "occurred_at": "2019-07-02T12:00:00+08:00"},
    ]
    records.sort(key=lambda r: timefmt.parse(r["occurred_at"], "/occurred_at", offset_required=True))
    for r in records:
        for key in ("member_id", "event_id", "order_ref", "redemption_id", "payment_ref"):
            if key in r:
                r[key] = prefix + r[key]
        if "ticket" in r:
            r["ticket"]["user_id"] = prefix + r["ticket"]["user_id"]
    records = [r for r in records if r["type"] != "ticket_created"]
    path = _write(tmp_path, records)
    start = dt.datetime(2019, 6, 1) - dt.timedelta(hours=8)
    end = dt.datetime(2020, 2, 1) - dt.timedelta(hours=8)
    # live: the same services and periodic jobs at the same instants, in the test database
    cfg = mp.current()
    ticks = Ticks(cfg, start, end)

    def run_ticks(at, inclusive=False):
        for kind, t in ticks.due(at, inclusive):
            if kind != "day":
                continue
            clock.set_now(t)
            while jl.expire_lots(at=t):
                pass
            if ticks.deduction_day(t):
                growth.deduct_all(t)
            plans.run_due(t)
    try:
        for r in records:
            at = timefmt.parse(r["occurred_at"], "/occurred_at", offset_required=True)
            if at >= end:
                break
            run_ticks(at)
            clock.set_now(at)
            try:
                if r["type"] == "points_redeemed":
                    points.redeem(r["member_id"], r["redemption_id"], r["points"], r.get("purpose"), "test")
                elif r["type"] == "plan_subscribed":
                    plans.subscribe(r["member_id"], r["plan"], "external", r["payment_ref"], True, "test")
                elif r["type"] == "plan_cancelled":
                    plans.cancel(r["member_id"], "test")
                else:
                    events.ingest(r, "test")
            except Problem:
                pass
        run_ticks(end, inclusive=True)
        clock.set_now(end)
        live = {}
        for m in Member.select().where(Member.member_ref.startswith(prefix)):
            live[m.member_ref] = {"level": m.level, "growth": m.growth,
                                  "points": ledger_port.points_balance(cfg, m.member_ref)}
    finally:
        clock.set_now(None)
    sim = simulation.runner.execute({"candidate": {"files": dict(policy.active().files)}, "baseline": "active",
                                     "events": path, "from": "2019-06-01", "to": "2020-02-01", "workers": 2})
    got = sim["candidate"]["member_states"]
    assert len(live) >= 10
    assert got == live
    assert sim["baseline"]["member_states"] == live
    assert sum(m["growth"] for m in live.values()) > 0 and any(m["points"] for m in live.values())
    from app.models.membership import GrowthEntry
    paid_order = GrowthEntry.get((GrowthEntry.event_id == prefix + "x-o1-paid") & (GrowthEntry.kind == "earn"))
    assert paid_order.delta == 4500  # 3,000 yuan x1.5 while the plan was paid


def test_ticket_replay_routing_and_sla(app, tmp_path):
    """A complaint answered after two business hours breaches the 60-minute target, not a 180-minute one."""
    records = [
        {"type": "ticket_created", "ticket_id": "T1", "occurred_at": "2024-07-01T10:00:00+08:00",
         "ticket": {"category": "投诉", "title": "客服态度差", "user_id": "T-user", "channel": "app"},
         "first_response_at": "2024-07-01T12:00:00+08:00"},
        {"type": "ticket_created", "ticket_id": "T2", "occurred_at": "2024-07-01T10:30:00+08:00",
         "ticket": {"category": "发票", "title": "补开发票", "user_id": "T-user-2", "channel": "web"}},
    ]
    cand = _candidate(tmp_path, {"policies/sla.yaml": ("    first_response_minutes: 60",
                                                        "    first_response_minutes: 180")})
    with app.app_context():
        rep, _ = simulation.simulate({"candidate": cand, "baseline": _candidate(tmp_path / "b"),
                                      "events": _write(tmp_path, records), "from": "2024-06-01",
                                      "to": "2024-08-01", "workers": 2})
    b, c = rep["baseline"]["tickets"], rep["candidate"]["tickets"]
    assert b["created"] == c["created"] == 2
    assert b["routing"] == c["routing"]
    assert b["routing"].get("finance", {}) and sum(n for d in b["routing"].values() for n in d.values()) == 2
    (prio,) = [p for p in b["sla"]]
    assert b["sla"][prio]["first_response"] == {"measured": 1, "breached": 1}
    assert c["sla"][prio]["first_response"] == {"measured": 1, "breached": 0}
    assert rep["diff"]["tickets"]["sla"][prio]["first_response"]["breached"] == -1


def test_repeated_event_ids_and_refund_by_hand(app, tmp_path):
    """An event id seen again: the same body is a replay (counted once), another body is refused (409); a
    partial refund claws back its share of growth and points and demotes."""
    order = {"event_id": "D-1", "member_id": "D", "type": "order_paid", "amount_fen": 100000, "order_ref": "OD1",
             "channel": "app", "occurred_at": "2024-07-01T10:00:00+08:00"}
    records = [order, dict(order), dict(order, amount_fen=5),
               {"event_id": "D-2", "member_id": "D", "type": "order_refunded", "amount_fen": 50000,
                "order_ref": "OD1", "occurred_at": "2024-07-05T10:00:00+08:00"}]
    folder = _candidate(tmp_path)
    with app.app_context():
        rep, rows = simulation.simulate({"candidate": folder, "baseline": folder, "events": _write(tmp_path, records),
                                         "from": "2024-06-01", "to": "2024-08-01", "workers": 2})
    b = rep["baseline"]
    assert b["refused"] == {"order_paid:event-id-reused": 1}
    assert b["growth"] == {"earned": 1000, "clawed_back": 500, "deducted": 0, "cut_by_caps": 0}
    assert (b["points"]["issued"], b["points"]["clawed_back"], b["points"]["outstanding"]) == (1000, 500, 500)
    assert (b["levels"]["promotions"], b["levels"]["demotions"]) == (1, 1)
    assert rows == [{"member_id": "D", "baseline_level": "注册", "candidate_level": "注册", "baseline_growth": 500,
                     "candidate_growth": 500, "baseline_points": 500, "candidate_points": 500}]
    assert sim_report.is_zero(rep["diff"])


def test_workers_read_the_source_or_the_planner_sorts_it(app, tmp_path):
    """An ordered file is read by the workers themselves, an unordered one is planned (sorted) first: the same
    figures either way, and per partition; a bad record is refused as such from either path."""
    from app.errors import Problem
    records = sources.generate(30, 120, 9, start="2024-10-01")
    folder = _candidate(tmp_path)
    spec = {"candidate": folder, "baseline": folder, "from": "2024-11-01", "to": "2025-02-01", "workers": 2}
    with app.app_context():
        ordered, _ = simulation.simulate({**spec, "events": _write(tmp_path, records)})
        shuffled, _ = simulation.simulate({**spec, "events": _write(tmp_path, records[::-1], "rev.jsonl")})
        split, _ = simulation.simulate({**spec, "events": _write(tmp_path, records), "partitions": 3})
        bad = records[:5] + [{"type": "order_paid", "member_id": "x"}] + records[5:]
        with pytest.raises(Problem) as got:
            simulation.simulate({**spec, "events": _write(tmp_path, bad, "bad.jsonl")})
    assert got.value.code == "bad-event-record" and got.value.status == 422
    assert ordered["baseline"]["growth"]["earned"] > 0 and ordered["baseline"]["points"]["issued"] > 0
    assert ordered["inputs"]["records"] == shuffled["inputs"]["records"] == split["inputs"]["records"] > 50
    for other in (shuffled, split):
        for key in ("levels", "growth", "points", "caps", "benefits", "plans", "tickets", "refused", "members"):
            assert other["baseline"][key] == ordered["baseline"][key], key
