"""Service operations HTTP API (service tag): QA reviews (质检), rosters, shifts, attendance, capacity forecast."""
import datetime as dt
import re

from flask import Blueprint, g, jsonify, request

from app.api import operation
from app.errors import validation_failed
from app.services.service import quality, workforce

bp = Blueprint("service_ops", __name__, url_prefix="/v1/service")

TAGS = ["service"]
RANGE = {"date_from": "first local date YYYY-MM-DD (default: today)", "date_to": "last local date (default: date_from)"}
MAX_DAYS = 92


def _date(name, default=None):
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", raw):
        raise validation_failed([{"pointer": f"/query/{name}", "validator": "format", "message": "YYYY-MM-DD"}])
    try:
        return dt.date.fromisoformat(raw)
    except ValueError:
        raise validation_failed([{"pointer": f"/query/{name}", "validator": "format", "message": "YYYY-MM-DD"}]) \
            from None


def _range(today):
    lo = _date("date_from", today)
    hi = _date("date_to", lo)
    if hi < lo or (hi - lo).days >= MAX_DAYS:
        raise validation_failed([{"pointer": "/query/date_to", "validator": "range",
                                  "message": f"date_from <= date_to, at most {MAX_DAYS} days"}])
    return lo, hi


def _today():
    from app.platform import clock
    return workforce.local_day(workforce.current(), clock.now())


def _text(name, maximum=64):
    raw = request.args.get(name)
    if raw is not None and (len(raw) > maximum or "\x00" in raw):
        raise validation_failed([{"pointer": f"/query/{name}", "validator": "maxLength",
                                  "message": f"at most {maximum} characters"}])
    return raw or None


# --- QA (质检) -------------------------------------------------------------------------------------------

@bp.post("/qa/sample")
@operation("Draw the QA sample of one local day (the daily job does yesterday; a second run adds nothing)",
           scope="service:write", permission="qa.manage", body="api/service/qa_sample.json", tags=TAGS, idempotent="replay",
           response="api/service/qa_sampling.json")
def qa_sample():
    from app.services.service.workforce import parse_day
    return jsonify(quality.sample_day(parse_day(g.body["date"], "/date")))


@bp.get("/qa/reviews")
@operation("QA reviews (inspectors and QA managers see all; an agent sees their own)", scope="service:read",
           permission=("qa.score", "qa.manage", "qa.appeal"), tags=TAGS,
           query={"inspector": "staff number", "agent": "staff number", "state": "assigned | scored | acknowledged | "
                  "appealed | resolved", "date_from": "first local date", "date_to": "last local date"},
           response="api/service/qa_reviews.json")
def qa_reviews():
    from app.platform.auth import has_permission
    agent = _text("agent")
    if not has_permission(g.principal, ("qa.score", "qa.manage")):
        agent = g.staff_no
    lo, hi = _date("date_from"), _date("date_to")
    return jsonify({"items": quality.list_reviews(_text("inspector"), agent, _text("state", 16),
                                                  lo and lo.isoformat(), hi and hi.isoformat())})


@bp.post("/qa/reviews")
@operation("Pick a closed conversation or a ticket for review by hand (assigned to me; one review per subject)",
           scope="service:write", permission="qa.score", body="api/service/qa_review.json", tags=TAGS, status=201, idempotent="replay",
           response="api/service/qa_review_record.json")
def qa_create():
    resp = jsonify(quality.create_review(g.staff_no, g.body))
    resp.status_code = 201
    return resp


@bp.get("/qa/reviews/<int:review_id>")
@operation("A QA review with its score, appeal and resolution", scope="service:read",
           permission=("qa.score", "qa.manage", "qa.appeal"), tags=TAGS,
           response="api/service/qa_review_record.json")
def qa_get(review_id):
    from app.errors import not_found
    from app.platform.auth import has_permission
    r = quality.get(review_id)
    if not has_permission(g.principal, ("qa.score", "qa.manage")) and r.agent != g.staff_no:
        raise not_found("review", review_id)
    return jsonify(quality.review_dict(r))


@bp.get("/qa/reviews/<int:review_id>/decisions")
@operation("Why this review exists and scored as it did (sampling stratum, rubric rule, resolution; with versions)",
           scope="service:read", permission=("qa.score", "qa.manage"), tags=TAGS,
           response="api/service/decisions.json")
def qa_decisions(review_id):
    return jsonify({"items": quality.decisions_of(review_id)})


@bp.post("/qa/reviews/<int:review_id>/score")
@operation("Score a review with the rubric in force (a fatal item scores 0) and comment", scope="service:write",
           permission=("qa.score", "qa.manage"), body="api/service/qa_score.json", tags=TAGS, idempotent="replay",
           response="api/service/qa_review_record.json")
def qa_score(review_id):
    from app.platform.auth import has_permission
    return jsonify(quality.score(g.staff_no, review_id, g.body, manager=has_permission(g.principal, "qa.manage")))


@bp.post("/qa/reviews/<int:review_id>/acknowledge")
@operation("The agent accepts the score of their work", scope="service:write", permission="qa.appeal", tags=TAGS, idempotent="replay",
           response="api/service/qa_review_record.json")
def qa_acknowledge(review_id):
    return jsonify(quality.acknowledge(g.staff_no, review_id))


@bp.post("/qa/reviews/<int:review_id>/appeal")
@operation("The agent appeals the score of their work (within the policy's appeal_days)", scope="service:write",
           permission="qa.appeal", body="api/service/qa_appeal.json", tags=TAGS, idempotent="replay",
           response="api/service/qa_review_record.json")
def qa_appeal(review_id):
    return jsonify(quality.appeal(g.staff_no, review_id, g.body))


@bp.post("/qa/reviews/<int:review_id>/resolve")
@operation("A supervisor resolves an appeal: uphold, or amend with a new rubric sheet", scope="service:write",
           permission="qa.manage", body="api/service/qa_resolve.json", tags=TAGS, idempotent="replay",
           response="api/service/qa_review_record.json")
def qa_resolve(review_id):
    return jsonify(quality.resolve(g.staff_no, review_id, g.body))


@bp.get("/qa/summary")
@operation("QA scores per agent, group and local day (reviews, scored, average, fatal, passed, appealed)",
           scope="service:read", tags=TAGS, query=RANGE,
           response="api/service/qa_summary.json")
def qa_summary():
    lo, hi = _range(_today())
    return jsonify({"date_from": lo.isoformat(), "date_to": hi.isoformat(),
                    "items": quality.score_summary(lo, hi)})


# --- rosters and shifts (排班) -----------------------------------------------------------------------------

@bp.get("/rosters")
@operation("Weekly shift patterns per agent and skill group", scope="service:read", tags=TAGS,
           query={"staff_no": "one agent's", "group": "one skill group's"},
           response="api/service/rosters.json")
def rosters():
    return jsonify({"items": workforce.list_rosters(_text("staff_no"), _text("group"))})


@bp.put("/rosters/<staff_no>/<group>")
@operation("Set an agent's weekly shift pattern in a skill group (local times of the workforce calendar)",
           scope="service:write", permission="roster.edit", body="api/service/roster.json", tags=TAGS,
           response="api/service/roster_record.json")
def put_roster(staff_no, group):
    return jsonify(workforce.put_roster(g.staff_no, staff_no, group, g.body))


@bp.delete("/rosters/<staff_no>/<group>")
@operation("Remove an agent's weekly pattern in a skill group", scope="service:write", permission="roster.edit",
           tags=TAGS, idempotent="replay",
           response="api/service/deleted.json")
def delete_roster(staff_no, group):
    return jsonify(workforce.delete_roster(staff_no, group))


@bp.get("/shift-exceptions")
@operation("Dated roster exceptions (leave, extra shifts)", scope="service:read", tags=TAGS,
           query=dict(RANGE, staff_no="one agent's"),
           response="api/service/shift_exceptions.json")
def shift_exceptions():
    from app.models.service_ops import ServiceShiftException as E
    lo, hi = _range(_today())
    q = E.select().where((E.day >= lo.isoformat()) & (E.day <= hi.isoformat())).order_by(E.day, E.id)
    if _text("staff_no"):
        q = q.where(E.staff_no == _text("staff_no"))
    return jsonify({"items": [workforce.exception_dict(e) for e in q]})


@bp.post("/shift-exceptions")
@operation("Record leave (whole day or a time range) or an extra shift", scope="service:write",
           permission="roster.edit", body="api/service/shift_exception.json", tags=TAGS, status=201, idempotent="replay",
           response="api/service/shift_exception_record.json")
def add_shift_exception():
    resp = jsonify(workforce.add_exception(g.staff_no, g.body))
    resp.status_code = 201
    return resp


@bp.delete("/shift-exceptions/<int:exc_id>")
@operation("Remove a roster exception", scope="service:write", permission="roster.edit", tags=TAGS, idempotent="replay",
           response="api/service/deleted.json")
def delete_shift_exception(exc_id):
    return jsonify(workforce.delete_exception(exc_id))


@bp.get("/shifts")
@operation("Shifts as worked out on the business calendar (holidays, make-up workdays, leave, extra shifts)",
           scope="service:read", tags=TAGS, query=dict(RANGE, staff_no="one agent's", group="one skill group's"),
           response="api/service/shifts.json")
def shifts():
    lo, hi = _range(_today())
    items = workforce.shifts(lo, hi, _text("staff_no"), _text("group"))
    return jsonify({"timezone": workforce.current().calendar.timezone,
                    "items": [workforce.shift_dict(s) for s in items]})


@bp.get("/attendance")
@operation("Attendance per agent per local day from the presence log: late, early leave, absent, online minutes",
           scope="service:read", permission=("service.supervise", "roster.edit"), tags=TAGS,
           query=dict(RANGE, staff_no="one agent's"),
           response="api/service/attendance.json")
def attendance():
    lo, hi = _range(_today())
    return jsonify({"items": workforce.attendance(lo, hi, _text("staff_no"))})


@bp.get("/capacity-forecast")
@operation("Rostered capacity per skill group per local hour (agents on shift × capacity from the service policy)",
           scope="service:read", tags=TAGS, query=dict(RANGE, group="one skill group"),
           response="api/service/capacity_forecast.json")
def capacity_forecast():
    lo, hi = _range(_today())
    return jsonify(dict(workforce.capacity_forecast(lo, hi, _text("group")), date_from=lo.isoformat(),
                        date_to=hi.isoformat()))
