"""Service operations pages: the QA inbox and scoring with the rubric (质检), rosters and attendance (排班考勤).

The same quality and workforce service functions and permissions as the service-operations API.
"""
import datetime as dt
import re

from flask import g, request

from app.errors import validation_failed
from app.platform import auth, clock
from app.services.service import desk, quality, workforce
from app.services.service.policy import current as service_policy
from app.web.base import blueprint, form_fields, form_text, page, render, validated

bp = blueprint("web_operations", "/web")

QA_VIEW = ("qa.score", "qa.manage", "qa.appeal")
WEEKDAYS = (("mon", "周一"), ("tue", "周二"), ("wed", "周三"), ("thu", "周四"), ("fri", "周五"), ("sat", "周六"),
            ("sun", "周日"))


def _inspector():
    return auth.has_permission(g.principal, ("qa.score", "qa.manage"))


def _date(name, default):
    raw = request.args.get(name) or ""
    if not raw:
        return default
    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", raw):
            raise ValueError(raw)
        return dt.date.fromisoformat(raw)
    except ValueError:
        raise validation_failed([{"pointer": f"/query/{name}", "validator": "format", "message": "YYYY-MM-DD"}]) \
            from None


# --- QA inbox and scoring ------------------------------------------------------------------------------

@bp.get("/qa")
@page(scope="service:read", permission=QA_VIEW)
def qa_inbox():
    """Inspectors: the reviews assigned to them (or all, ?all=1); an agent: the reviews of their own work."""
    state = request.args.get("state") or None
    if state and state not in ("assigned", "scored", "acknowledged", "appealed", "resolved"):
        raise validation_failed([{"pointer": "/query/state", "validator": "enum", "message": "unknown state"}])
    if _inspector():
        mine = None if request.args.get("all") == "1" else g.staff_no
        items = quality.list_reviews(inspector=mine, state=state)
    else:
        items = quality.list_reviews(agent=g.staff_no, state=state)
    return render("qa_inbox.html", items=list(reversed(items)), inspector=_inspector(), state=state)


@bp.get("/qa/<int:review_id>")
@page(scope="service:read", permission=QA_VIEW)
def qa_review(review_id):
    r = quality.get(review_id)
    if not _inspector() and r.agent != g.staff_no:
        from app.errors import not_found
        raise not_found("review", review_id)
    review = quality.review_dict(r)
    transcript = desk.transcript(r.subject_id) if r.subject_kind == "conversation" else None
    return render("qa_review.html", review=review, transcript=transcript, rubric=quality.current().items,
                  pass_score=quality.current().doc.get("rubric", {}).get("pass_score"), inspector=_inspector())


@bp.post("/qa/<int:review_id>/score")
@page(scope="service:write", permission=("qa.score", "qa.manage"))
def qa_score(review_id):
    rubric = quality.current().items
    body = {"items": {}, "fatal": []}
    for code, item in rubric.items():
        if item.get("fatal"):
            if request.form.get(f"fatal.{code}"):
                body["fatal"].append(code)
        elif form_text(f"item.{code}").isdigit():
            body["items"][code] = int(form_text(f"item.{code}"))
    body.update(form_fields("comment"))
    out = quality.score(g.staff_no, review_id, validated("api/service/qa_score.json", body),
                        manager=auth.has_permission(g.principal, "qa.manage"))
    return render("_flash.html", kind="ok", title="已评分", detail=f"质检 #{review_id}：{out['score']} 分",
                  code="qa-scored")


@bp.post("/qa/<int:review_id>/acknowledge")
@page(scope="service:write", permission="qa.appeal")
def qa_acknowledge(review_id):
    quality.acknowledge(g.staff_no, review_id)
    return render("_flash.html", kind="ok", title="已确认评分", detail=f"质检 #{review_id}", code="qa-acknowledged")


@bp.post("/qa/<int:review_id>/appeal")
@page(scope="service:write", permission="qa.appeal")
def qa_appeal(review_id):
    quality.appeal(g.staff_no, review_id, validated("api/service/qa_appeal.json",
                                                    form_fields("reason", required=("reason",))))
    return render("_flash.html", kind="ok", title="已提交申诉", detail=f"质检 #{review_id}", code="qa-appealed")


# --- rosters and attendance ----------------------------------------------------------------------------

@bp.get("/rosters")
@page(scope="service:read", permission=("roster.edit", "service.supervise"))
def rosters():
    cfg = workforce.current()
    today = workforce.local_day(cfg, clock.now())
    lo = _date("date_from", today - dt.timedelta(days=6))
    hi = _date("date_to", today)
    if hi < lo or (hi - lo).days >= 31:
        raise validation_failed([{"pointer": "/query/date_to", "validator": "range",
                                  "message": "date_from <= date_to, at most 31 days"}])
    return render("rosters.html", rosters=workforce.list_rosters(), weekdays=WEEKDAYS, lo=lo, hi=hi,
                  attendance=workforce.attendance(lo, hi), groups=service_policy().groups, today=today)


@bp.post("/rosters")
@page(scope="service:write", permission="roster.edit")
def put_roster():
    staff_no, group = form_text("staff_no"), form_text("group")
    week = {}
    for code, _ in WEEKDAYS:
        start, end = form_text(f"{code}.start"), form_text(f"{code}.end")
        if start or end:
            week[code] = [[start, end]]
    body = validated("api/service/roster.json", dict(form_fields("valid_from", "valid_to",
                                                                 required=("valid_from",)), week=week))
    if not re.fullmatch(r"[^\s\x00]{1,64}", staff_no) or not re.fullmatch(r"[a-z][a-z0-9_-]{0,63}", group):
        raise validation_failed([{"pointer": "/staff_no", "validator": "pattern", "message": "工号和技能组必填"}])
    workforce.put_roster(g.staff_no, staff_no, group, body)
    resp = render("_flash.html", kind="ok", title="排班已保存", detail=f"{staff_no} · {group}", code="roster-saved")
    resp.headers["HX-Refresh"] = "true"
    return resp
