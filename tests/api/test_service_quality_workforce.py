"""Service operations over HTTP against the real server: QA sampling over a generated month (exact counts, never
twice, reproducible), rubric scoring with a fatal item, the appeal flow, attendance from a scripted presence log,
going online outside a shift, the capacity forecast, escalation to the least-loaded supervisor on shift."""
import datetime as dt
import json
from zoneinfo import ZoneInfo

import pytest

from app.platform import clock
from tests.conftest import Http, make_token
from tests.service_factories import (clean_floor, compensate, make_conversation, new_agent, policy_files,
                                     service_policy)

TZ = ZoneInfo("Asia/Shanghai")

STRATA = [
    {"name": "compensated", "when": {"compensated": True}, "rate_percent": 100},
    {"name": "low_csat", "when": {"csat_max": 2}, "rate_percent": 50},
    {"name": "long_handling", "when": {"handle_seconds_min": 1800}, "rate_percent": 30},
    {"name": "complaints", "when": {"category": ["投诉"]}, "rate_percent": 20},
    {"name": "routine", "rate_percent": 5, "per_agent": True, "min": 1},
]


def local(text):
    """Naive UTC of a Shanghai wall-clock time ``YYYY-MM-DD HH:MM``."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=TZ).astimezone(dt.timezone.utc).replace(tzinfo=None)


@pytest.fixture(scope="module")
def ops(app, server):
    # agents stay online for hours between scripted events: a 4 h heartbeat timeout (one test relies on it)
    with service_policy(app, calendar="always", assignment="pull", agent_timeout_seconds=14400), \
            policy_files(app, {"quality.yaml": {"strata": STRATA, "seed": 7, "appeal_days": 3},
                               "workforce.yaml": {"online_outside_shift": "allow", "late_grace_minutes": 5,
                                                  "early_leave_grace_minutes": 5, "early_online_minutes": 15,
                                                  "makeup_workday_as": "mon",
                                                  "escalation": "least_loaded_on_shift"}}):
        yield


@pytest.fixture()
def floor(app, ops):
    from app.db import db
    from app.models.service_ops import ServiceRoster, ServiceShiftException
    clean_floor(app)
    with app.app_context(), db.connection_context():
        ServiceRoster.delete().execute()
        ServiceShiftException.delete().execute()
    clock.set_now(clock.now())
    yield
    clock.set_now(None)
    clean_floor(app)


@pytest.fixture(scope="module")
def api(server):
    return Http(server, make_token(["service:write", "tickets:write", "act-as"], "ops-tests"))


def as_(api, staff_no, method, path, json=None, params=None):
    return api.request(method, "/v1/service" + path, json=json, params=params, headers={"Patron-Act-As": staff_no})


# --- QA sampling ---------------------------------------------------------------------------------------

def test_sampling_month_strata_rates_exact_never_twice_reproducible(app, api, floor, db_conn):
    import jobs.service
    from app import policy
    from app.models.service_ops import ServiceQaReview
    from app.models.staff import Staff
    from app.policy import decisions
    inspectors = [new_agent(app, ("qa_inspector",), "QI") for _ in range(2)]
    agents = [new_agent(app, ("agent_l1",), "QA") for _ in range(3)]
    sup = new_agent(app, ("supervisor",), "QS")
    days = [dt.date(2025, 3, 1) + dt.timedelta(days=i) for i in range(31)]
    for day in days:
        base = local(f"{day} 10:00")
        t = iter(range(1000))

        def at():
            return base + dt.timedelta(minutes=next(t))
        for a in agents:  # routine: 10 per agent -> ceil(10 * 5%) = 1 per agent
            for i in range(10):
                make_conversation(a, at(), csat=5 if i % 2 else None)
        for i in range(4):  # compensated (one with a low CSAT too: the first matching stratum wins) -> all 4
            compensate(make_conversation(agents[0], at(), csat=1 if i == 0 else None), agents[0])
        for _ in range(3):  # low CSAT -> ceil(3 * 50%) = 2
            make_conversation(agents[1], at(), csat=2)
        for _ in range(2):  # long handling -> ceil(2 * 30%) = 1
            make_conversation(agents[2], at(), handle_seconds=2000)
        for _ in range(5):  # complaints -> ceil(5 * 20%) = 1
            make_conversation(agents[1], at(), category="投诉")
        make_conversation(None, at())  # the bot closed it: nobody to review
        # closed at 00:30 the next local day (16:30 UTC the same day): it belongs to the next day
        make_conversation(agents[2], local(f"{day + dt.timedelta(days=1)} 00:30"), channel="web")
    expected = {"compensated": 4, "low_csat": 2, "long_handling": 1, "complaints": 1, "routine": 3}
    for day in days:
        r = as_(api, sup, "POST", "/qa/sample", {"date": day.isoformat()})
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["created"] == 11 and out["drawn"] == 11, out
        assert {k: v["created"] for k, v in out["by_stratum"].items()} == expected
        population = {k: v["population"] for k, v in out["by_stratum"].items()}
        spill = 0 if day == days[0] else 1  # yesterday's 00:30 conversation is routine today
        assert population == {"compensated": 4, "low_csat": 3, "long_handling": 2, "complaints": 5,
                              "routine": 30 + spill}
    # the job for the same days (twice) and the API again: nothing is sampled twice
    for day in days:
        assert jobs.service.qa_sample(day.isoformat())["created"] == 0
    assert as_(api, sup, "POST", "/qa/sample", {"date": days[3].isoformat()}).json()["created"] == 0
    month = ServiceQaReview.select().where((ServiceQaReview.period >= "2025-03-01")
                                           & (ServiceQaReview.period <= "2025-03-31"))
    assert month.count() == 31 * 11
    assert len({r.subject_id for r in month}) == 31 * 11
    counts = {}
    for r in month:
        counts[(r.period, r.stratum)] = counts.get((r.period, r.stratum), 0) + 1
        assert r.source == "sample" and r.rule == f"strata.{r.stratum}" and r.policy_version == policy.active_version()
    assert counts == {(d.isoformat(), s): n for d in days for s, n in expected.items()}
    routine = {}
    for r in month.where(ServiceQaReview.stratum == "routine"):
        routine[(r.period, r.agent)] = routine.get((r.period, r.agent), 0) + 1
    assert routine == {(d.isoformat(), a): 1 for d in days for a in agents}
    # inspectors balanced by load (every inspector started with no open review)
    everyone = [s.staff_no for s in Staff.select().where(Staff.roles.contains(" qa_inspector ") & Staff.active)]
    assert set(inspectors) <= set(everyone)
    loads = [ServiceQaReview.select().where((ServiceQaReview.inspector == s) & (ServiceQaReview.state == "assigned"))
             .count() for s in everyone]
    assert max(loads) - min(loads) <= 1 and sum(loads) >= 31 * 11
    # reproducible: the same seed and day draw the same conversations again
    def day5():
        return sorted((r.subject_id, r.stratum) for r in ServiceQaReview.select()
                      .where(ServiceQaReview.period == "2025-03-05"))
    before = day5()
    ServiceQaReview.delete().where(ServiceQaReview.period == "2025-03-05").execute()
    assert as_(api, sup, "POST", "/qa/sample", {"date": "2025-03-05"}).json()["created"] == 11
    assert day5() == before
    # every sampling decision records the version and the stratum
    subject, stratum = before[0]
    [d] = [d for d in decisions.for_subject(f"service:conversation:{subject}") if d["ruleset"] == "quality"][-1:]
    assert d["rule"] == f"strata.{stratum}" and d["version"] == policy.active_version()
    assert d["inputs"]["seed"] == 7 and d["outcome"]["sampled"] is True
    # another seed draws another routine sample for that day (deleted again, redrawn)
    ServiceQaReview.delete().where(ServiceQaReview.period == "2025-03-05").execute()
    with policy_files(app, {"quality.yaml": {"strata": STRATA, "seed": 8}}):
        assert as_(api, sup, "POST", "/qa/sample", {"date": "2025-03-05"}).json()["created"] == 11
        other = day5()
    assert other != before
    # leave the inspectors' queues empty for the next tests
    ServiceQaReview.update(state="acknowledged").where(ServiceQaReview.state == "assigned").execute()


# --- rubric, appeal ------------------------------------------------------------------------------------

RUBRIC_FULL = {"greeting": 10, "understanding": 20, "accuracy": 40, "efficiency": 15, "attitude": 15}


def test_rubric_scoring_and_fatal_item(app, api, floor, db_conn):
    from app import policy
    inspector = new_agent(app, ("qa_inspector",), "RI")
    other_inspector = new_agent(app, ("qa_inspector",), "RJ")
    agent = new_agent(app, ("agent_l1",), "RA")
    c1 = make_conversation(agent, clock.now() - dt.timedelta(hours=1))
    c2 = make_conversation(agent, clock.now() - dt.timedelta(hours=1))
    r = as_(api, inspector, "POST", "/qa/reviews", {"subject": "conversation", "id": c1})
    assert r.status_code == 201, r.text
    rev = r.json()
    assert rev["state"] == "assigned" and rev["inspector"] == inspector and rev["agent"] == agent
    assert as_(api, other_inspector, "POST", "/qa/reviews", {"subject": "conversation", "id": c1}).json()["code"] \
        == "already-reviewed"
    assert as_(api, agent, "POST", "/qa/reviews", {"subject": "conversation", "id": c2}).status_code == 403
    # the sheet must match the rubric in force
    bad = as_(api, inspector, "POST", f"/qa/reviews/{rev['id']}/score",
              {"items": dict(RUBRIC_FULL, greeting=11, bogus=1), "fatal": ["greeting"]})
    assert bad.status_code == 422 and bad.json()["code"] == "rubric-mismatch"
    assert {e["pointer"] for e in bad.json()["errors"]} == {"/items/greeting", "/items/bogus", "/fatal/0"}
    missing = as_(api, inspector, "POST", f"/qa/reviews/{rev['id']}/score", {"items": {"greeting": 10}})
    assert missing.status_code == 422 and "/items/accuracy" in {e["pointer"] for e in missing.json()["errors"]}
    assert as_(api, other_inspector, "POST", f"/qa/reviews/{rev['id']}/score",
               {"items": RUBRIC_FULL}).json()["code"] == "not-your-review"
    r = as_(api, inspector, "POST", f"/qa/reviews/{rev['id']}/score",
            {"items": dict(RUBRIC_FULL, accuracy=30, attitude=12), "comment": "解答不完整"})
    assert r.status_code == 200, r.text
    scored = r.json()
    assert scored["score"] == 10 + 20 + 30 + 15 + 12 and scored["state"] == "scored" and scored["rule"] == "rubric"
    assert scored["policy_version"] == policy.active_version() and scored["comment"] == "解答不完整"
    assert as_(api, inspector, "POST", f"/qa/reviews/{rev['id']}/score",
               {"items": RUBRIC_FULL}).json()["code"] == "already-scored"
    # a fatal item makes the score 0 whatever the other points
    rev2 = as_(api, inspector, "POST", "/qa/reviews", {"subject": "conversation", "id": c2}).json()
    r = as_(api, inspector, "POST", f"/qa/reviews/{rev2['id']}/score", {"items": RUBRIC_FULL, "fatal": ["privacy"]})
    assert r.status_code == 200, r.text
    assert r.json()["score"] == 0 and r.json()["fatal"] == ["privacy"] and r.json()["rule"] == "rubric.items.privacy"
    ds = as_(api, inspector, "GET", f"/qa/reviews/{rev2['id']}/decisions").json()["items"]
    assert [(d["rule"], d["outcome"].get("score")) for d in ds] == [("manual", None), ("rubric.items.privacy", 0)]
    assert all(d["version"] == policy.active_version() for d in ds)
    # a ticket is reviewed as its assignee's work
    from app.models.tickets import Ticket
    from tests.jobs.test_tickets_sla_watch import make_ticket
    t = make_ticket(created_ago_minutes=1, department="cs")
    Ticket.update(assignee=agent).where(Ticket.id == t.id).execute()
    r = as_(api, inspector, "POST", "/qa/reviews", {"subject": "ticket", "id": t.id})
    assert r.status_code == 201, r.text
    rev3 = r.json()
    assert (rev3["agent"], rev3["group"], rev3["subject"]) == (agent, "cs", {"kind": "ticket", "id": t.id})
    assert as_(api, inspector, "POST", f"/qa/reviews/{rev3['id']}/score", {"items": RUBRIC_FULL}).json()["score"] == 100
    assert as_(api, inspector, "POST", "/qa/reviews", {"subject": "ticket", "id": 10**12}).status_code == 404
    # the agent sees their own reviews only
    mine = as_(api, agent, "GET", "/qa/reviews").json()["items"]
    assert {m["id"] for m in mine} == {rev["id"], rev2["id"], rev3["id"]}
    assert as_(api, other_inspector, "GET", f"/qa/reviews/{rev['id']}").status_code == 200


def test_appeal_flow_and_score_summary(app, api, floor, db_conn):
    from app.services.service import quality
    inspector = new_agent(app, ("qa_inspector",), "PI")
    agent = new_agent(app, ("agent_l1",), "PA")
    colleague = new_agent(app, ("agent_l1",), "PB")
    sup = new_agent(app, ("supervisor",), "PS")
    day = local("2025-05-06 15:00")
    convs = [make_conversation(agent, day + dt.timedelta(minutes=i)) for i in range(3)]
    ids = []
    for c in convs:
        rid = as_(api, inspector, "POST", "/qa/reviews", {"subject": "conversation", "id": c}).json()["id"]
        ids.append(rid)
    points = [dict(RUBRIC_FULL, accuracy=20), RUBRIC_FULL, dict(RUBRIC_FULL, efficiency=5)]  # 80, 100, 90
    for rid, sheet in zip(ids, points):
        assert as_(api, inspector, "POST", f"/qa/reviews/{rid}/score", {"items": sheet}).status_code == 200
    # only the agent answers; acknowledge one, appeal one
    assert as_(api, colleague, "POST", f"/qa/reviews/{ids[1]}/acknowledge").json()["code"] == "not-your-review"
    r = as_(api, agent, "POST", f"/qa/reviews/{ids[1]}/acknowledge")
    assert r.status_code == 200 and r.json()["state"] == "acknowledged"
    assert as_(api, agent, "POST", f"/qa/reviews/{ids[1]}/appeal", {"reason": "x"}).json()["code"] == "already-answered"
    r = as_(api, agent, "POST", f"/qa/reviews/{ids[0]}/appeal", {"reason": "用户问题已在第二轮解答"})
    assert r.status_code == 200 and r.json()["state"] == "appealed"
    # the appeal window closes after appeal_days
    clock.set_now(clock.now() + dt.timedelta(days=3, minutes=1))
    late = as_(api, agent, "POST", f"/qa/reviews/{ids[2]}/appeal", {"reason": "迟到的申诉"})
    assert late.status_code == 409 and late.json()["code"] == "appeal-window-closed"
    # a supervisor resolves (not the agent, not an inspector without qa.manage)
    assert as_(api, agent, "POST", f"/qa/reviews/{ids[0]}/resolve", {"decision": "uphold"}).status_code == 403
    assert as_(api, inspector, "POST", f"/qa/reviews/{ids[0]}/resolve", {"decision": "uphold"}).status_code == 403
    r = as_(api, sup, "POST", f"/qa/reviews/{ids[0]}/resolve",
            {"decision": "amend", "items": dict(RUBRIC_FULL, accuracy=35), "note": "申诉成立"})
    assert r.status_code == 200, r.text
    res = r.json()
    assert res["state"] == "resolved" and res["score"] == 95 and res["resolution"]["decision"] == "amended"
    assert res["rule"] == "appeal.amend:rubric"
    assert as_(api, sup, "POST", f"/qa/reviews/{ids[0]}/resolve", {"decision": "uphold"}).json()["code"] \
        == "not-appealed"
    # summaries: the statistics read quality.score_summary; the API shows the same rows
    summary = quality.score_summary(dt.date(2025, 5, 6), dt.date(2025, 5, 6))
    [row] = [s for s in summary if s["agent"] == agent]
    assert row == {"agent": agent, "group": "general", "day": "2025-05-06", "reviews": 3, "scored": 3,
                   "average_score": round((95 + 100 + 90) / 3, 2), "min_score": 90, "max_score": 100, "fatal": 0,
                   "passed": 3, "appealed": 1, "amended": 1}
    r = api.get("/v1/service/qa/summary", params={"date_from": "2025-05-06", "date_to": "2025-05-06"})
    assert r.status_code == 200 and row in r.json()["items"]
    by_agent = quality.score_summary("2025-05-06", "2025-05-06", by=("agent",))
    assert {"agent": agent, **{k: v for k, v in row.items() if k not in ("agent", "group", "day")}} in by_agent
    # the statistics' qa_score column is that average, for the agent's row of the day (and per channel)
    for by in ("agent", "agent,channel"):
        r = api.get("/v1/service/stats", params={"from": "2025-05-06", "to": "2025-05-06", "by": by})
        assert r.status_code == 200, r.text
        [mine] = [s for s in r.json()["items"] if s["agent"] == agent]
        assert mine["qa_score"] == round((95 + 100 + 90) / 3, 2) and mine["conversations"] == 3, mine


# --- rosters, attendance, online outside a shift, forecast ---------------------------------------------

WEEK = {d: [["09:00", "12:00"], ["13:00", "18:00"]] for d in ("mon", "tue", "wed", "thu", "fri")}


def set_roster(api, sup, staff_no, week=WEEK, group="general", valid_from="2026-09-01"):
    r = as_(api, sup, "PUT", f"/rosters/{staff_no}/{group}", {"week": week, "valid_from": valid_from})
    assert r.status_code == 200, r.text
    return r.json()


def go(api, staff_no, what, when):
    clock.set_now(local(when))
    r = as_(api, staff_no, "POST", f"/agent/{what}", {} if what == "online" else None)
    assert r.status_code == 200, r.text
    return r.json()


def test_attendance_from_a_scripted_presence_log(app, api, floor, db_conn):
    from app.models.service_ops import ServicePresence
    sup = new_agent(app, ("supervisor",), "WS")
    agent = new_agent(app, ("agent_l1",), "WA")
    assert as_(api, agent, "PUT", f"/rosters/{agent}/general", {"week": WEEK, "valid_from": "2026-09-01"}) \
        .status_code == 403  # roster.edit: schedulers and supervisors
    set_roster(api, sup, agent)
    r = as_(api, sup, "POST", "/shift-exceptions", {"staff_no": agent, "date": "2026-09-24", "kind": "leave",
                                                    "note": "年假"})
    assert r.status_code == 201, r.text
    r = as_(api, sup, "POST", "/shift-exceptions", {"staff_no": agent, "date": "2026-09-26", "kind": "extra",
                                                    "group": "general", "start": "10:00", "end": "14:00"})
    assert r.status_code == 201, r.text
    # the week on the business calendar: 09-20 (Sun) is a make-up workday, 09-25 (Fri) a holiday
    shifts = api.get("/v1/service/shifts", params={"date_from": "2026-09-20", "date_to": "2026-09-26",
                                                   "staff_no": agent}).json()
    assert shifts["timezone"] == "Asia/Shanghai"
    assert [(s["date"], s["start"], s["end"]) for s in shifts["items"]] == [
        (d, a, b) for d in ("2026-09-20", "2026-09-21", "2026-09-22", "2026-09-23")
        for a, b in (("09:00", "12:00"), ("13:00", "18:00"))] + [("2026-09-26", "10:00", "14:00")]
    assert shifts["items"][0]["start_at"] == "2026-09-20T01:00:00Z"
    # 09-20: on time, stays to the end (heartbeats keep the agent online)
    go(api, agent, "online", "2026-09-20 08:50")
    go(api, agent, "heartbeat", "2026-09-20 12:40")
    go(api, agent, "heartbeat", "2026-09-20 16:00")
    go(api, agent, "offline", "2026-09-20 18:02")
    # 09-21: 12 minutes late, away half an hour, leaves two hours early
    go(api, agent, "online", "2026-09-21 09:12")
    go(api, agent, "away", "2026-09-21 10:00")
    go(api, agent, "online", "2026-09-21 10:30")
    go(api, agent, "heartbeat", "2026-09-21 13:30")
    go(api, agent, "offline", "2026-09-21 16:00")
    # 09-22: absent. 09-23: heartbeats stop at 12:30 -> offline at the 4 h timeout, 16:30 (90 minutes early)
    go(api, agent, "online", "2026-09-23 08:58")
    go(api, agent, "heartbeat", "2026-09-23 12:30")
    # 09-24: on leave. 09-25: a holiday, online an hour anyway (the timeout is noticed when going online)
    go(api, agent, "online", "2026-09-25 10:00")
    go(api, agent, "offline", "2026-09-25 11:00")
    # 09-26: the extra shift, within the graces at both ends
    go(api, agent, "online", "2026-09-26 10:03")
    go(api, agent, "offline", "2026-09-26 13:56")
    log = [(p.status, p.reason, p.at) for p in ServicePresence.select().where(ServicePresence.staff_no == agent)
           .order_by(ServicePresence.at, ServicePresence.id)]
    assert ("offline", "agent-timeout", local("2026-09-23 16:30")) in log and len(log) == 12
    clock.set_now(local("2026-09-27 12:00"))
    r = as_(api, sup, "GET", "/attendance", params={"date_from": "2026-09-20", "date_to": "2026-09-26",
                                                    "staff_no": agent})
    assert r.status_code == 200, r.text
    got = {row["date"]: row for row in r.json()["items"]}
    assert sorted(got) == ["2026-09-20", "2026-09-21", "2026-09-22", "2026-09-23", "2026-09-25", "2026-09-26"]

    def brief(row):
        return {k: row[k] for k in ("late", "late_minutes", "early_leave", "early_leave_minutes", "absent",
                                    "online_minutes", "away_minutes", "shift_minutes")}
    assert brief(got["2026-09-20"]) == {"late": False, "late_minutes": 0, "early_leave": False,
                                        "early_leave_minutes": 0, "absent": False, "online_minutes": 552,
                                        "away_minutes": 0, "shift_minutes": 480}
    assert brief(got["2026-09-21"]) == {"late": True, "late_minutes": 12, "early_leave": True,
                                        "early_leave_minutes": 120, "absent": False, "online_minutes": 48 + 330,
                                        "away_minutes": 30, "shift_minutes": 480}
    assert [(s["late_minutes"], s["early_leave_minutes"]) for s in got["2026-09-21"]["shifts"]] == [(12, 0), (0, 120)]
    assert brief(got["2026-09-22"]) == {"late": False, "late_minutes": 0, "early_leave": False,
                                        "early_leave_minutes": 0, "absent": True, "online_minutes": 0,
                                        "away_minutes": 0, "shift_minutes": 480}
    assert brief(got["2026-09-23"]) == {"late": False, "late_minutes": 0, "early_leave": True,
                                        "early_leave_minutes": 90, "absent": False, "online_minutes": 452,
                                        "away_minutes": 0, "shift_minutes": 480}
    assert brief(got["2026-09-25"]) == {"late": False, "late_minutes": 0, "early_leave": False,
                                        "early_leave_minutes": 0, "absent": False, "online_minutes": 60,
                                        "away_minutes": 0, "shift_minutes": 0}
    assert brief(got["2026-09-26"]) == {"late": False, "late_minutes": 0, "early_leave": False,
                                        "early_leave_minutes": 0, "absent": False, "online_minutes": 233,
                                        "away_minutes": 0, "shift_minutes": 240}
    assert as_(api, agent, "GET", "/attendance").status_code == 403


def test_online_outside_shift_refused_when_policy_says_so(app, api, floor, db_conn):
    from app.policy import decisions
    sup = new_agent(app, ("supervisor",), "OS")
    agent = new_agent(app, ("agent_l1",), "OA")
    free = new_agent(app, ("agent_l1",), "OB")
    set_roster(api, sup, agent)
    with policy_files(app, {"workforce.yaml": {"online_outside_shift": "refuse", "early_online_minutes": 15}}):
        clock.set_now(local("2026-09-28 08:40"))  # Monday, 20 minutes before the shift
        r = as_(api, agent, "POST", "/agent/online", {})
        assert r.status_code == 409 and r.json()["code"] == "outside-shift", r.text
        assert r.json()["next_shift"]["start_at"] == "2026-09-28T01:00:00Z"
        [d] = [d for d in decisions.for_subject(f"service:agent:{agent}") if d["ruleset"] == "workforce"]
        assert d["rule"] == "online_outside_shift" and d["outcome"] == {"refused": "outside-shift"}
        assert as_(api, free, "POST", "/agent/online", {}).json()["code"] == "outside-shift"  # no roster at all
        clock.set_now(local("2026-09-28 08:46"))  # within early_online_minutes
        assert as_(api, agent, "POST", "/agent/online", {}).status_code == 200
        as_(api, agent, "POST", "/agent/offline")
        clock.set_now(local("2026-09-28 12:30"))  # the lunch break is not a shift
        assert as_(api, agent, "POST", "/agent/online", {}).json()["code"] == "outside-shift"
        clock.set_now(local("2026-10-01 10:00"))  # National Day: a holiday of the business calendar
        assert as_(api, agent, "POST", "/agent/online", {}).json()["code"] == "outside-shift"
    clock.set_now(local("2026-10-01 10:00"))  # the policy allows it again
    assert as_(api, agent, "POST", "/agent/online", {}).status_code == 200


def test_capacity_forecast_per_group_and_hour(app, api, floor, db_conn):
    sup = new_agent(app, ("supervisor",), "CS")
    a = new_agent(app, ("agent_l1",), "CA")
    b = new_agent(app, ("agent_l2",), "CB")
    set_roster(api, sup, a)
    set_roster(api, sup, b, week={"mon": [["09:30", "12:00"]]}, group="vip")
    set_roster(api, sup, b, week={"mon": [["13:00", "15:00"]]}, group="general")
    with service_policy(app, calendar="always", assignment="pull", agent_timeout_seconds=14400,
                        capacity_by_role={"agent_l1": 1, "agent_l2": 2}):
        r = api.get("/v1/service/capacity-forecast", params={"date_from": "2026-09-21"})
    assert r.status_code == 200, r.text
    out = r.json()
    assert sorted(out["groups"]) == ["general", "vip"] and out["timezone"] == "Asia/Shanghai"
    general = {row["hour"]: row for row in out["groups"]["general"]}
    vip = {row["hour"]: row for row in out["groups"]["vip"]}
    assert len(general) == 24 and general["08:00"]["capacity"] == 0
    assert (general["09:00"]["agents"], general["09:00"]["agent_minutes"], general["09:00"]["capacity"]) == (1, 60, 1)
    assert (general["12:00"]["agents"], general["12:00"]["capacity"]) == (0, 0)
    assert (general["13:00"]["agents"], general["13:00"]["agent_minutes"], general["13:00"]["capacity"]) == (2, 120, 3)
    assert (vip["09:00"]["agents"], vip["09:00"]["agent_minutes"], vip["09:00"]["capacity"]) == (1, 30, 1)
    assert general["09:00"]["start_at"] == "2026-09-21T01:00:00Z"
    # an agent's roles must staff the group
    r = as_(api, sup, "PUT", f"/rosters/{a}/dedicated", {"week": WEEK, "valid_from": "2026-09-01"})
    assert r.status_code == 422 and r.json()["code"] == "not-in-group"



def test_rosters_and_exceptions_are_listed_and_removed(app, api, floor, db_conn):
    sup = new_agent(app, ("supervisor",), "RS")
    a = new_agent(app, ("agent_l1",), "RA")
    b = new_agent(app, ("agent_l2",), "RB")
    set_roster(api, sup, a)
    set_roster(api, sup, b, week={"sat": [["13:00", "24:00"]]}, group="vip", valid_from="2026-09-05")
    r = api.get("/v1/service/rosters")
    assert r.status_code == 200, r.text
    assert [(x["staff_no"], x["group"]) for x in r.json()["items"]] == sorted([(a, "general"), (b, "vip")])
    [mine] = api.get("/v1/service/rosters", params={"staff_no": b}).json()["items"]
    assert mine["week"] == {"sat": [["13:00", "24:00"]]} and mine["valid_from"] == "2026-09-05"
    assert mine["valid_to"] is None and mine["updated_by"] == sup
    assert [x["staff_no"] for x in api.get("/v1/service/rosters", params={"group": "general"}).json()["items"]] == [a]
    leave = as_(api, sup, "POST", "/shift-exceptions", {"staff_no": a, "date": "2026-09-24", "kind": "leave",
                                                        "start": "09:00", "end": "12:00"}).json()
    extra = as_(api, sup, "POST", "/shift-exceptions", {"staff_no": b, "date": "2026-09-26", "kind": "extra",
                                                        "group": "vip", "start": "10:00", "end": "14:00"}).json()
    r = api.get("/v1/service/shift-exceptions", params={"date_from": "2026-09-20", "date_to": "2026-09-30"})
    assert r.status_code == 200, r.text
    assert [(x["id"], x["kind"], x["group"], x["start"]) for x in r.json()["items"]] == [
        (leave["id"], "leave", None, "09:00"), (extra["id"], "extra", "vip", "10:00")]
    assert [x["id"] for x in api.get("/v1/service/shift-exceptions", params={
        "date_from": "2026-09-20", "date_to": "2026-09-30", "staff_no": b}).json()["items"]] == [extra["id"]]
    assert api.get("/v1/service/shift-exceptions").json()["items"] == []  # default: today only
    # removed: gone from the list and from the shifts; a second delete finds nothing
    r = as_(api, sup, "DELETE", f"/shift-exceptions/{extra['id']}")
    assert r.status_code == 200 and r.json() == {"deleted": True}, r.text
    assert as_(api, sup, "DELETE", f"/shift-exceptions/{extra['id']}").status_code == 404
    assert as_(api, a, "DELETE", f"/shift-exceptions/{leave['id']}").status_code == 403  # roster.edit
    shifts = api.get("/v1/service/shifts", params={"date_from": "2026-09-26", "date_to": "2026-09-26",
                                                   "staff_no": b}).json()["items"]
    assert [(s["group"], s["start"], s["end"]) for s in shifts] == [("vip", "13:00", "24:00")]
    r = as_(api, sup, "DELETE", f"/rosters/{b}/vip")
    assert r.status_code == 200 and r.json() == {"deleted": True}
    assert [x["staff_no"] for x in api.get("/v1/service/rosters").json()["items"]] == [a]

# --- escalation ----------------------------------------------------------------------------------------

def test_escalation_goes_to_the_least_loaded_supervisor_on_shift(app, api, floor, db_conn):
    from app.models.staff import Staff
    from app.models.tickets import Ticket
    from app.policy import decisions
    from app.services.tickets import sla as tickets_sla
    from tests.jobs.test_tickets_sla_watch import make_ticket
    sched = new_agent(app, ("supervisor",), "ES")
    busy, idle, away = (new_agent(app, ("supervisor",), p) for p in ("EB", "EI", "EA"))
    from app.db import db
    now = clock.now()
    # whatever earlier tests left due is escalated first, before these two are on shift (else it lands on them)
    db.connect(reuse_if_open=True)  # watch() opens a transaction: the connection must be open (autoconnect is not)
    tickets_sla.watch(now=now)
    around_the_clock = {d: [["00:00", "24:00"]] for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
    for s in (busy, idle):
        set_roster(api, sched, s, week=around_the_clock, group="cs", valid_from="2020-01-01")
    for _ in range(2):
        t = make_ticket(created_ago_minutes=1, department="cs")
        Ticket.update(assignee=busy).where(Ticket.id == t.id).execute()
    t = make_ticket(created_ago_minutes=20, department="cs")
    tickets_sla.watch(now=now)
    r = api.get(f"/v1/tickets/{t.id}")
    assert r.status_code == 200 and r.json()["assignee"] == idle, r.text
    [d] = decisions.for_subject(f"ticket:{t.id}")[-1:]
    assert d["rule"] == "workforce.escalation.least_loaded_on_shift" and d["outcome"]["assignee"] == idle
    assert d["inputs"]["loads"][busy] == 2 and set(d["inputs"]["on_shift"]) == {busy, idle}
    assert away in d["inputs"]["candidates"] and d["version"]
    # nobody on shift: the department's first supervisor, as before, with the reason recorded
    assert as_(api, sched, "DELETE", f"/rosters/{busy}/general").status_code == 404
    for s in (busy, idle):
        assert as_(api, sched, "DELETE", f"/rosters/{s}/cs").status_code == 200
    t2 = make_ticket(created_ago_minutes=20, department="cs")
    tickets_sla.watch(now=now)
    first = (Staff.select().where((Staff.department == "cs") & Staff.active & Staff.roles.contains(" supervisor "))
             .order_by(Staff.id).first()).staff_no
    assert Ticket.get_by_id(t2.id).assignee == first
    [d] = decisions.for_subject(f"ticket:{t2.id}")[-1:]
    assert d["rule"] == "workforce.escalation.first" and d["outcome"] == {"assignee": first,
                                                                          "reason": "nobody-on-shift"}
    json.dumps(d)
