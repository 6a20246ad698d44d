"""Quality assurance (质检): reproducible stratified sampling of closed conversations, inspectors balanced by load,
rubric scoring (fatal items score 0), the agent's acknowledgement or appeal, a supervisor's resolution, summaries.

Every sampling and scoring decision records the policy version and the rule (stratum, rubric item) behind it.
"""
import datetime as dt
import hashlib
import json
import math
import random
from dataclasses import dataclass

import peewee as pw

from app.db import write_transaction
from app.errors import Problem, not_found
from app.models.service import ServiceCompensation, ServiceConversation
from app.models.service_ops import ServiceQaReview
from app.models.staff import Staff
from app.platform import clock
from app.platform.timefmt import iso

RULESET = "quality"
OPEN_STATES = ("assigned",)


@dataclass
class QualityConfig:
    version: str
    doc: dict
    calendar: object

    @property
    def items(self):
        return self.doc["rubric"]["items"]


def current():
    """The QualityConfig of the active set (503 ``policy-missing`` without a single quality policy)."""
    from app import policy
    return policy.derived("quality", build)


def build(ps):
    from app.services.service.policy import with_calendar
    doc, calendar = with_calendar(ps, "quality")
    return QualityConfig(version=ps.version, doc=doc, calendar=calendar)


def cross_check(ps):
    """Errors of the quality policy against itself and the set: calendar, inspector roles, strata names,
    groups and close categories named by strata, rubric weights summing to 100 with fatal items unweighted."""
    docs = ps.get("quality")
    if not docs:
        return []
    doc = docs[0]
    f = doc.get("_file", "policies/quality.yaml")
    errors = []
    cal = ps.get("calendar")
    if cal and doc.get("calendar") not in (cal[0].get("calendars") or {}):
        errors.append(f"{f}: $.calendar: unknown calendar {doc.get('calendar')!r}")
    staff = ps.get("staff")
    if staff:
        roles = set(staff[0].get("roles") or {})
        for i, r in enumerate(doc.get("inspector_roles") or ()):
            if r not in roles:
                errors.append(f"{f}: $.inspector_roles[{i}]: unknown role {r!r}")
    service = ps.get("service")
    groups = set((service[0].get("groups") or {})) if service else None
    categories = set(service[0].get("close_categories") or ()) if service else None
    seen = set()
    for i, st in enumerate(doc.get("strata") or ()):
        if not isinstance(st, dict):
            continue
        if st.get("name") in seen:
            errors.append(f"{f}: $.strata[{i}].name: stratum {st.get('name')!r} named twice")
        seen.add(st.get("name"))
        when = st.get("when") or {}
        for j, g in enumerate(when.get("group") or ()):
            if groups is not None and g not in groups:
                errors.append(f"{f}: $.strata[{i}].when.group[{j}]: unknown skill group {g!r}")
        for j, c in enumerate(when.get("category") or ()):
            if categories is not None and c not in categories:
                errors.append(f"{f}: $.strata[{i}].when.category[{j}]: {c!r} is not a close category of the "
                              f"service policy")
    items = ((doc.get("rubric") or {}).get("items") or {})
    total = 0
    for code, item in items.items():
        if not isinstance(item, dict):
            continue
        if item.get("fatal") and "weight" in item:
            errors.append(f"{f}: $.rubric.items.{code}.weight: a fatal item has no weight (finding it scores 0)")
        elif not item.get("fatal"):
            if "weight" not in item:
                errors.append(f"{f}: $.rubric.items.{code}: a non-fatal item needs a weight")
            total += int(item.get("weight") or 0)
    if items and total != 100:
        errors.append(f"{f}: $.rubric.items: weights of the non-fatal items sum to {total}, not 100")
    return errors


# --- sampling ------------------------------------------------------------------------------------------

def _utc(cfg, day, days=0):
    local = dt.datetime.combine(day + dt.timedelta(days=days), dt.time(0)).replace(tzinfo=cfg.calendar.tz)
    return local.astimezone(dt.timezone.utc).replace(tzinfo=None)


def local_day(cfg, at):
    return at.replace(tzinfo=dt.timezone.utc).astimezone(cfg.calendar.tz).date()


def _facts(c, compensated):
    handle = int((c.closed_at - c.assigned_at).total_seconds()) if c.closed_at and c.assigned_at else 0
    return {"id": c.id, "agent": c.agent, "group": c.group, "channel": c.channel, "category": c.close_category,
            "csat": c.csat_score, "handle_seconds": handle, "compensated": c.id in compensated}


def _matches(when, f):
    if "channel" in when and f["channel"] not in when["channel"]:
        return False
    if "category" in when and f["category"] not in when["category"]:
        return False
    if "group" in when and f["group"] not in when["group"]:
        return False
    if "compensated" in when and f["compensated"] != when["compensated"]:
        return False
    if "csat_max" in when and (f["csat"] is None or f["csat"] > when["csat_max"]):
        return False
    if "handle_seconds_min" in when and f["handle_seconds"] < when["handle_seconds_min"]:
        return False
    return True


def sample_size(n, stratum):
    """How many of ``n`` conversations a stratum (cell) draws: ceil(n × rate / 100), at least ``min``, at most n."""
    if n <= 0:
        return 0
    k = math.ceil(n * int(stratum["rate_percent"]) / 100)
    return min(n, max(k, int(stratum.get("min", 0))))


def _rng(cfg, day, stratum, cell):
    seed = hashlib.sha256(f"{cfg.doc['seed']}:{day.isoformat()}:{stratum}:{cell}".encode()).hexdigest()
    return random.Random(int(seed[:16], 16))


def draw(day, cfg=None):
    """The sample of one local day: which conversations, in which stratum (pure: the same inputs, the same draw).

    Returns:
        list of (facts, stratum name) in draw order.
    """
    cfg = cfg or current()
    start, end = _utc(cfg, day), _utc(cfg, day, 1)
    convs = list(ServiceConversation.select().where(
        (ServiceConversation.state == "closed") & ServiceConversation.agent.is_null(False)
        & ServiceConversation.assigned_at.is_null(False)
        & (ServiceConversation.closed_at >= start) & (ServiceConversation.closed_at < end))
        .order_by(ServiceConversation.id))
    ids = [c.id for c in convs]
    compensated = set()
    for i in range(0, len(ids), 500):
        compensated |= {r.conversation_id for r in ServiceCompensation.select(ServiceCompensation.conversation_id)
                        .where(ServiceCompensation.conversation_id.in_(ids[i:i + 500])
                               & ServiceCompensation.state.in_(["paid", "pending_approval"]))}
    cells = {}
    for c in convs:
        f = _facts(c, compensated)
        for st in cfg.doc["strata"]:
            if _matches(st.get("when") or {}, f):
                cell = f["agent"] if st.get("per_agent") else "*"
                cells.setdefault((st["name"], cell), []).append(f)
                break
    by_name = {st["name"]: st for st in cfg.doc["strata"]}
    out = []
    for (name, cell), members in sorted(cells.items()):
        k = sample_size(len(members), by_name[name])
        for f in _rng(cfg, day, name, cell).sample(members, k):
            out.append((f, name, len(members), cell))
    return out


def _inspectors(cfg):
    roles = cfg.doc["inspector_roles"]
    cond = None
    for r in roles:
        c = Staff.roles.contains(f" {r} ")
        cond = c if cond is None else (cond | c)
    return [s.staff_no for s in Staff.select(Staff.staff_no).where((Staff.active == True) & cond)  # noqa: E712
            .order_by(Staff.staff_no)]


def _loads(names):
    if not names:
        return {}
    rows = (ServiceQaReview.select(ServiceQaReview.inspector, pw.fn.COUNT(ServiceQaReview.id).alias("n"))
            .where(ServiceQaReview.inspector.in_(names) & ServiceQaReview.state.in_(OPEN_STATES))
            .group_by(ServiceQaReview.inspector))
    out = {n: 0 for n in names}
    out.update({r.inspector: r.n for r in rows})
    return out


def _least_loaded(loads, exclude):
    choices = [n for n in loads if n != exclude]
    if not choices:
        return None
    return min(choices, key=lambda n: (loads[n], n))


def sample_day(day):
    """Draw one local day's sample and create its reviews, each assigned to the least-loaded inspector.

    Idempotent: a conversation already reviewed (by an earlier run, or by hand) is skipped; the unique
    (subject) key keeps concurrent runs from reviewing it twice.

    Args:
        day: local date (datetime.date) of the quality calendar's zone.

    Returns:
        {date, policy_version, drawn, created, by_stratum: {name: {population, drawn, created}}}.
    """
    from app.policy import decisions
    cfg = current()
    now = clock.now()
    picks = draw(day, cfg)
    out = {"date": day.isoformat(), "policy_version": cfg.version, "drawn": len(picks), "created": 0,
           "by_stratum": {}}
    for st in cfg.doc["strata"]:
        out["by_stratum"][st["name"]] = {"population": 0, "drawn": 0, "created": 0}
    counted = set()
    with write_transaction():
        loads = _loads(_inspectors(cfg))
        have = set()
        ids = [f["id"] for f, *_ in picks]
        for i in range(0, len(ids), 500):
            have |= {r.subject_id for r in ServiceQaReview.select(ServiceQaReview.subject_id).where(
                (ServiceQaReview.subject_kind == "conversation") & ServiceQaReview.subject_id.in_(ids[i:i + 500]))}
        for f, name, population, cell in picks:
            st = out["by_stratum"][name]
            if (name, cell) not in counted:
                st["population"] += population
                counted.add((name, cell))
            st["drawn"] += 1
            if f["id"] in have:
                continue
            inspector = _least_loaded(loads, f["agent"])
            rule = f"strata.{name}"
            n = (ServiceQaReview.insert(
                subject_kind="conversation", subject_id=f["id"], agent=f["agent"], group=f["group"],
                channel=f["channel"], period=day.isoformat(), source="sample", stratum=name, inspector=inspector,
                state="assigned", policy_version=cfg.version, rule=rule, created_at=now, updated_at=now)
                .on_conflict_ignore().as_rowcount().execute())  # rows inserted (not the last row id)
            if not n:
                continue
            if inspector is not None:
                loads[inspector] += 1
            decisions.record(RULESET, cfg.version, rule, f"service:conversation:{f['id']}",
                             dict(f, date=day.isoformat(), seed=cfg.doc["seed"], population=population, cell=cell),
                             {"sampled": True, "stratum": name, "inspector": inspector})
            st["created"] += 1
            out["created"] += 1
    return out


# --- reviews -------------------------------------------------------------------------------------------

def review_dict(r):
    return {"id": r.id, "subject": {"kind": r.subject_kind, "id": r.subject_id}, "agent": r.agent, "group": r.group,
            "channel": r.channel, "date": r.period, "source": r.source, "stratum": r.stratum,
            "inspector": r.inspector, "state": r.state, "score": r.score, "items": json.loads(r.items),
            "fatal": json.loads(r.fatal), "comment": r.comment, "scored_at": iso(r.scored_at),
            "acknowledged_at": iso(r.acknowledged_at),
            "appeal": ({"reason": r.appeal_reason, "at": iso(r.appealed_at)} if r.appealed_at else None),
            "resolution": ({"decision": r.resolution, "by": r.resolved_by, "at": iso(r.resolved_at),
                            "note": r.resolution_note} if r.resolved_at else None),
            "policy_version": r.policy_version, "rule": r.rule, "created_at": iso(r.created_at)}


def get(review_id):
    r = ServiceQaReview.get_or_none(ServiceQaReview.id == review_id)
    if r is None:
        raise not_found("review", review_id)
    return r


def list_reviews(inspector=None, agent=None, state=None, date_from=None, date_to=None, limit=200):
    q = ServiceQaReview.select().order_by(ServiceQaReview.id)
    if inspector:
        q = q.where(ServiceQaReview.inspector == inspector)
    if agent:
        q = q.where(ServiceQaReview.agent == agent)
    if state:
        q = q.where(ServiceQaReview.state == state)
    if date_from:
        q = q.where(ServiceQaReview.period >= date_from)
    if date_to:
        q = q.where(ServiceQaReview.period <= date_to)
    return [review_dict(r) for r in q.limit(limit)]


def create_review(inspector, body):
    """An inspector picks a conversation or a ticket for review by hand (assigned to themself).

    Args:
        inspector: the acting inspector's staff number.
        body: {subject: conversation|ticket, id}.
    """
    from app.policy import decisions
    cfg = current()
    now = clock.now()
    if body["subject"] == "conversation":
        c = ServiceConversation.get_or_none(ServiceConversation.id == body["id"])
        if c is None:
            raise not_found("conversation", body["id"])
        if c.state != "closed" or not c.agent:
            raise Problem(409, "not-reviewable", "Not reviewable", "review a conversation an agent served, once closed")
        agent, group, channel, at = c.agent, c.group, c.channel, c.closed_at
    else:
        from app.services.service import tickets_port
        t = tickets_port.ticket_brief(body["id"])
        agent = t["assignee"] or t["created_by"]
        if not agent or not Staff.select().where(Staff.staff_no == agent).exists():
            raise Problem(409, "not-reviewable", "Not reviewable", "the ticket has no staff member to review")
        group, channel, at = t["department"], t["channel"], t["created_at"]
    if agent == inspector:
        raise Problem(409, "own-work", "Own work", "an inspector does not review their own work")
    with write_transaction():
        n = (ServiceQaReview.insert(
            subject_kind=body["subject"], subject_id=body["id"], agent=agent, group=group, channel=channel,
            period=local_day(cfg, at).isoformat(), source="manual", stratum=None, inspector=inspector,
            state="assigned", policy_version=cfg.version, rule="manual", created_at=now, updated_at=now)
            .on_conflict_ignore().as_rowcount().execute())
        if not n:
            raise Problem(409, "already-reviewed", "Already reviewed",
                          f"{body['subject']} {body['id']} has a review already (one per subject)")
        r = ServiceQaReview.get((ServiceQaReview.subject_kind == body["subject"])
                                & (ServiceQaReview.subject_id == body["id"]))
        decisions.record(RULESET, cfg.version, "manual", f"service:qa:{r.id}", body, {"inspector": inspector})
    return review_dict(r)


def compute_score(cfg, items, fatal):
    """(score, rule) of a rubric sheet: Σ item points, or 0 with rule ``rubric.items.<fatal>`` when a fatal
    item was found. Raises 422 ``rubric-mismatch`` for missing/unknown items or points above the weight."""
    rubric = cfg.items
    errors = []
    for code in items:
        if code not in rubric or rubric[code].get("fatal"):
            errors.append({"pointer": f"/items/{code}", "validator": "rubric", "message": "not a scored rubric item"})
        elif not 0 <= items[code] <= rubric[code]["weight"]:
            errors.append({"pointer": f"/items/{code}", "validator": "maximum",
                           "message": f"0..{rubric[code]['weight']} points"})
    for code, item in rubric.items():
        if not item.get("fatal") and code not in items:
            errors.append({"pointer": f"/items/{code}", "validator": "required", "message": "score every item"})
    for i, code in enumerate(fatal):
        if code not in rubric or not rubric[code].get("fatal"):
            errors.append({"pointer": f"/fatal/{i}", "validator": "rubric", "message": "not a fatal rubric item"})
    if errors:
        raise Problem(422, "rubric-mismatch", "Rubric mismatch", "the sheet does not match the rubric in force",
                      errors=errors)
    if fatal:
        return 0, f"rubric.items.{sorted(fatal)[0]}"
    return sum(items.values()), "rubric"


def score(actor, review_id, body, manager=False):
    """The inspector scores a review with the rubric in force (fatal item -> 0) and comments.

    Args:
        actor: the inspector (the assigned one; a QA manager may score any).
        body: {items: {code: points}, fatal?: [codes], comment?}.
    """
    from app.policy import decisions
    cfg = current()
    now = clock.now()
    fatal = sorted(set(body.get("fatal") or ()))
    total, rule = compute_score(cfg, body["items"], fatal)
    with write_transaction():
        r = get(review_id)
        if r.inspector not in (None, actor) and not manager:  # unassigned (no inspector existed): the scorer takes it
            raise Problem(403, "not-your-review", "Not your review", f"review {review_id} is assigned to {r.inspector}")
        if r.agent == actor:
            raise Problem(409, "own-work", "Own work", "an inspector does not review their own work")
        if r.state != "assigned":
            raise Problem(409, "already-scored", "Already scored", f"review {review_id} is {r.state}")
        n = (ServiceQaReview.update(state="scored", score=total, items=json.dumps(body["items"], sort_keys=True),
                                    fatal=json.dumps(fatal), comment=body.get("comment", ""), scored_at=now,
                                    inspector=r.inspector or actor, policy_version=cfg.version, rule=rule,
                                    updated_at=now)
             .where((ServiceQaReview.id == r.id) & (ServiceQaReview.state == "assigned")).execute())
        if not n:
            raise Problem(409, "already-scored", "Already scored", f"review {review_id} was scored meanwhile")
        decisions.record(RULESET, cfg.version, rule, f"service:qa:{r.id}", {"items": body["items"], "fatal": fatal},
                         {"score": total, "pass": total >= cfg.doc["rubric"].get("pass_score", 0)})
    return review_dict(get(review_id))


def _agents_scored(actor, review_id):
    r = get(review_id)
    if r.agent != actor:
        raise Problem(403, "not-your-review", "Not your review", f"review {review_id} is about {r.agent}")
    if r.state != "scored":
        raise Problem(409, "not-scored" if r.state == "assigned" else "already-answered", "Not open to answer",
                      f"review {review_id} is {r.state}")
    return r


def acknowledge(actor, review_id):
    """The agent accepts the score."""
    now = clock.now()
    with write_transaction():
        r = _agents_scored(actor, review_id)
        ServiceQaReview.update(state="acknowledged", acknowledged_at=now, updated_at=now) \
            .where((ServiceQaReview.id == r.id) & (ServiceQaReview.state == "scored")).execute()
    return review_dict(get(review_id))


def appeal(actor, review_id, body):
    """The agent appeals the score within the policy's ``appeal_days`` (409 ``appeal-window-closed`` after)."""
    cfg = current()
    now = clock.now()
    with write_transaction():
        r = _agents_scored(actor, review_id)
        days = int(cfg.doc.get("appeal_days", 3))
        if now > r.scored_at + dt.timedelta(days=days):
            raise Problem(409, "appeal-window-closed", "Appeal window closed",
                          f"appeals are taken within {days} days of the score")
        ServiceQaReview.update(state="appealed", appeal_reason=body["reason"], appealed_at=now, updated_at=now) \
            .where((ServiceQaReview.id == r.id) & (ServiceQaReview.state == "scored")).execute()
    return review_dict(get(review_id))


def resolve(actor, review_id, body):
    """A supervisor resolves an appeal: ``uphold`` the score, or ``amend`` it with a new rubric sheet."""
    from app.policy import decisions
    cfg = current()
    now = clock.now()
    with write_transaction():
        r = get(review_id)
        if r.state != "appealed":
            raise Problem(409, "not-appealed", "Not appealed", f"review {review_id} is {r.state}")
        if actor in (r.agent, r.inspector):
            raise Problem(409, "own-work", "Own work", "the agent or the inspector of a review cannot resolve it")
        fields = {"state": "resolved", "resolved_by": actor, "resolved_at": now, "updated_at": now,
                  "resolution_note": body.get("note", ""), "policy_version": cfg.version}
        if body["decision"] == "amend":
            if "items" not in body:
                raise Problem(422, "validation-failed", "Validation failed", "an amendment carries the new items",
                              errors=[{"pointer": "/items", "validator": "required", "message": "required"}])
            fatal = sorted(set(body.get("fatal") or ()))
            total, rule = compute_score(cfg, body["items"], fatal)
            fields.update(resolution="amended", score=total, items=json.dumps(body["items"], sort_keys=True),
                          fatal=json.dumps(fatal), rule=f"appeal.amend:{rule}")
            outcome = {"resolution": "amended", "score": total, "previous": r.score}
        else:
            fields.update(resolution="upheld", rule="appeal.uphold")
            outcome = {"resolution": "upheld", "score": r.score}
        ServiceQaReview.update(fields).where((ServiceQaReview.id == r.id)
                                             & (ServiceQaReview.state == "appealed")).execute()
        decisions.record(RULESET, cfg.version, fields["rule"], f"service:qa:{r.id}",
                         {"appeal": r.appeal_reason, "note": body.get("note", "")}, outcome)
    return review_dict(get(review_id))


def decisions_of(review_id):
    from app.policy import decisions
    r = get(review_id)
    return (decisions.for_subject(f"service:{r.subject_kind}:{r.subject_id}") if r.subject_kind == "conversation"
            else []) + decisions.for_subject(f"service:qa:{r.id}")


# --- summaries -----------------------------------------------------------------------------------------

def score_summary(date_from, date_to, by=("agent", "group", "day")):
    """QA scores per agent / group / day over local dates [date_from, date_to] (the statistics read this).

    Counts every review whose subject belongs to a day in the range (``date``: the local day the conversation
    closed or the ticket was created); the score is the final one (after an amended appeal).

    Args:
        date_from: first local date (datetime.date or ``YYYY-MM-DD``).
        date_to: last local date, inclusive.
        by: the keys to group by, any of ``agent``, ``group``, ``day`` (default all three).

    Returns:
        list of {agent?, group?, day?, reviews, scored, average_score (float, 2 places, None if none scored),
        min_score, max_score, fatal, passed, appealed, amended}, sorted by the keys.
    """
    cfg = current()
    pass_score = cfg.doc["rubric"].get("pass_score", 0)
    lo, hi = str(date_from), str(date_to)
    rows = ServiceQaReview.select().where((ServiceQaReview.period >= lo) & (ServiceQaReview.period <= hi))
    keys = {"agent": "agent", "group": "group", "day": "period"}
    out = {}
    for r in rows:
        k = tuple(getattr(r, keys[name]) or "" for name in by)
        a = out.setdefault(k, {"reviews": 0, "scored": 0, "total": 0, "min_score": None, "max_score": None,
                               "fatal": 0, "passed": 0, "appealed": 0, "amended": 0})
        a["reviews"] += 1
        if r.appealed_at is not None:
            a["appealed"] += 1
        if r.resolution == "amended":
            a["amended"] += 1
        if r.score is None:
            continue
        a["scored"] += 1
        a["total"] += r.score
        a["min_score"] = r.score if a["min_score"] is None else min(a["min_score"], r.score)
        a["max_score"] = r.score if a["max_score"] is None else max(a["max_score"], r.score)
        a["fatal"] += 1 if json.loads(r.fatal) else 0
        a["passed"] += 1 if r.score >= pass_score else 0
    result = []
    for k in sorted(out):
        a = out[k]
        total = a.pop("total")
        row = dict(zip(by, k))
        row.update(a, average_score=round(total / a["scored"], 2) if a["scored"] else None)
        result.append(row)
    return result
