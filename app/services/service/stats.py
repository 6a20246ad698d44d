"""Service statistics (统计): per business day and agent / skill group / channel, as JSON rows or CSV.

A conversation counts on the business day (the service calendar's time zone) it entered the human
queue, in the row of its group, channel and the agent who last served it (empty: nobody did).
Definitions (docs/service-operations.md):
- conversations: entered the queue; served: an agent was assigned at least once;
- first_response_avg_seconds: queue entry -> the first agent message, over conversations that got one;
- handling_avg_seconds: the first assignment -> close, over conversations an agent closed (resolved);
- abandoned: the user left or timed out while queued (nobody serving); transferred: at least one transfer;
- csat_avg: the mean survey score over rated conversations; compensation_fen: red packets paid on the
  conversation; tickets_opened: conversations that became a ticket; qa_score: the QA hook (qa_scores).
"""
import bisect
import collections
import datetime as dt
import re

import peewee as pw

from app.db import db
from app.errors import validation_failed
from app.models.service import ServiceCompensation, ServiceConversation, ServiceEvent
from app.platform import calendar as calmath, clock, export
from app.services.service.monitoring import USER_GONE
from app.services.service.policy import current

DIMENSIONS = ("agent", "group", "channel")
MAX_DAYS = 92  # one request's cost stays bounded: a quarter at most (longer spans: several requests)

# The columns of a statistics row, in order (JSON keys and the CSV header): the one place to add a column.
COLUMNS = ("day", "agent", "group", "channel", "conversations", "served", "first_response_avg_seconds",
           "handling_avg_seconds", "abandoned", "abandonment_rate_percent", "transferred", "transfer_rate_percent",
           "csat_count", "csat_avg", "compensation_fen", "tickets_opened", "qa_score")


_Conv = collections.namedtuple("_Conv", "id agent group channel queued_at state close_reason closed_at csat_score "
                                        "ticket_id")


def qa_scores(start, end, dims):
    """{(day, agent, group, channel): average QA score} over local dates [start, end] from the QA reviews
    (``quality.score_summary``), keyed like the statistics' rows: a dimension not grouped by is None.

    A review counts on the local day its conversation closed (or its ticket was created); a row's other columns
    count conversations on the day they were queued, so an overnight conversation's score sits on the next day.
    """
    from app.services.service import quality
    by = ("day",) + tuple(d for d in DIMENSIONS if d in dims)
    out = {}
    for r in quality.score_summary(start, end, by=by):
        key = (r["day"],) + tuple((r[d] or "") if d in dims else None for d in DIMENSIONS)
        out[key] = r["average_score"]
    return out


def _day(text, pointer):
    if not isinstance(text, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        return None, {"pointer": pointer, "validator": "format", "message": "expected a date YYYY-MM-DD"}
    try:
        return dt.date.fromisoformat(text), None
    except ValueError:
        return None, {"pointer": pointer, "validator": "format", "message": "not a calendar date"}


def parse_query(args, today=None):
    """Validated (from, to, dimensions, group) from query parameters (422 lists every bad field).

    ``from``/``to`` are business days, both inclusive (default: today); ``by`` a comma list of
    agent, group, channel (default: all three; the day is always a dimension).
    """
    today = today or calmath.local_date(current().calendar, clock.now())
    errors = []
    start, err = _day(args.get("from"), "/query/from") if args.get("from") else (today, None)
    errors += [err] if err else []
    end, err = _day(args.get("to"), "/query/to") if args.get("to") else (start or today, None)
    errors += [err] if err else []
    if start and end and end < start:
        errors.append({"pointer": "/query/to", "validator": "minimum", "message": "'to' is before 'from'"})
    elif start and end and (end - start).days + 1 > MAX_DAYS:
        errors.append({"pointer": "/query/to", "validator": "maximum", "message": f"at most {MAX_DAYS} days"})
    raw_by = args.get("by")
    dims = tuple(DIMENSIONS)
    if raw_by is not None:
        dims = tuple(d for d in raw_by.split(",") if d)
        bad = [d for d in dims if d not in DIMENSIONS]
        if bad or len(set(dims)) != len(dims):
            errors.append({"pointer": "/query/by", "validator": "enum",
                           "message": f"a comma list of {', '.join(DIMENSIONS)} (each once)"})
    group = args.get("group")  # a group the policy no longer has still has its history: only the shape is checked
    if group is not None and not re.fullmatch(r"[a-z][a-z0-9_-]{0,63}", group):
        errors.append({"pointer": "/query/group", "validator": "pattern", "message": "a skill group code"})
    if errors:
        raise validation_failed(errors)
    return start, end, tuple(d for d in DIMENSIONS if d in dims), group


def _instant(value):
    """A raw timestamp as naive UTC: SQLite gives text (also for MIN()), PostgreSQL a datetime."""
    if isinstance(value, str):
        return dt.datetime.fromisoformat(value)
    return value


def _avg(total, n):
    return round(total / n, 1) if n else None


def _pct(part, whole):
    return round(100.0 * part / whole, 1) if whole else None


def statistics(start, end, dims=DIMENSIONS, group=None, progress=None):
    """Rows of service statistics for the business days ``start``..``end`` (inclusive).

    Args:
        start, end: dates (business days in the service calendar's time zone).
        dims: the dimensions besides the day (subset of agent, group, channel); the others are summed over
            and come back as None.
        group: only this skill group.
        progress: optional ``progress(done, total)``, told as the conversations are counted (the CLI's bar).

    Returns:
        {from, to, timezone, by, columns, items: [row], totals: row}; rows sorted by day then dimensions.
    """
    cfg = current()
    cal = cfg.calendar
    t0, t1 = calmath.day_start(cal, start), calmath.day_start(cal, end + dt.timedelta(days=1))
    C = ServiceConversation
    q = (C.select(C.id, C.agent, C.group, C.channel, C.queued_at, C.state, C.close_reason, C.closed_at,
                  C.csat_score, C.ticket_id)
         .where(C.queued_at.is_null(False) & (C.queued_at >= t0) & (C.queued_at < t1)))
    if group:
        q = q.where(C.group == group)
    # raw rows (peewee's per-field conversion costs more than the rest of the report): instants parsed here
    convs = [_Conv(r[0], r[1], r[2], r[3], _instant(r[4]), r[5], r[6], _instant(r[7]), r[8], r[9])
             for r in db.execute(q.order_by(C.id))]
    in_range = q.select(C.id)  # the same conversations as a subquery: one query per table, not per chunk
    E = ServiceEvent
    firsts = (E.select(E.conversation, E.kind, pw.fn.MIN(E.created_at))
              .where(E.conversation.in_(in_range)
                     & (E.kind.in_(["assigned", "transferred"]) | ((E.kind == "message") & (E.sender == "agent"))))
              .group_by(E.conversation, E.kind).tuples())
    assigned, first_reply, transferred = {}, {}, set()
    for cid, kind, at in firsts:
        at = _instant(at)
        if kind == "assigned":
            assigned[cid] = at
        elif kind == "transferred":
            transferred.add(cid)
        else:
            first_reply[cid] = at
    S = ServiceCompensation
    paid = dict(S.select(S.conversation_id, pw.fn.SUM(S.amount_fen))
                .where(S.conversation_id.in_(in_range) & (S.state == "paid"))
                .group_by(S.conversation_id).tuples())

    days = [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]
    starts = [calmath.day_start(cal, d) for d in days]  # a conversation's day: bisect, not a zone per row
    labels = [d.isoformat() for d in days]
    acc = {}
    for i, c in enumerate(convs):
        if progress is not None and i % 1000 == 0:
            progress(i, len(convs))
        full = {"day": labels[bisect.bisect_right(starts, c.queued_at) - 1], "agent": c.agent or "",
                "group": c.group, "channel": c.channel}
        key = (full["day"],) + tuple(full[d] if d in dims else None for d in DIMENSIONS)
        a = acc.setdefault(key, {"n": 0, "served": 0, "fr_sum": 0, "fr_n": 0, "h_sum": 0, "h_n": 0, "abandoned": 0,
                                 "transferred": 0, "csat_sum": 0, "csat_n": 0, "fen": 0, "tickets": 0})
        _add(a, c, assigned.get(c.id), first_reply.get(c.id), c.id in transferred, int(paid.get(c.id) or 0))
    rows = [_row(key, a) for key, a in sorted(acc.items(), key=lambda kv: tuple("" if k is None else k
                                                                               for k in kv[0]))]
    total = {"n": 0, "served": 0, "fr_sum": 0, "fr_n": 0, "h_sum": 0, "h_n": 0, "abandoned": 0, "transferred": 0,
             "csat_sum": 0, "csat_n": 0, "fen": 0, "tickets": 0}
    for a in acc.values():
        for k in total:
            total[k] += a[k]
    if progress is not None:
        progress(len(convs), len(convs))
    scores = qa_scores(start, end, dims)
    for r in rows:
        r["qa_score"] = scores.get((r["day"], r["agent"], r["group"], r["channel"]))
    return {"from": start.isoformat(), "to": end.isoformat(), "timezone": cal.timezone, "by": list(dims),
            "group": group, "columns": list(COLUMNS), "items": rows,
            "totals": _row((None, None, None, None), total)}


def _add(a, c, assigned_at, replied_at, was_transferred, fen):
    a["n"] += 1
    if assigned_at is not None:
        a["served"] += 1
    if replied_at is not None:
        a["fr_sum"] += (replied_at - c.queued_at).total_seconds()
        a["fr_n"] += 1
    if c.state == "closed" and c.close_reason == "resolved" and assigned_at is not None and c.closed_at:
        a["h_sum"] += (c.closed_at - assigned_at).total_seconds()
        a["h_n"] += 1
    if c.state == "closed" and c.close_reason in USER_GONE and not c.agent:
        a["abandoned"] += 1
    if was_transferred:
        a["transferred"] += 1
    if c.csat_score is not None:
        a["csat_sum"] += c.csat_score
        a["csat_n"] += 1
    a["fen"] += fen
    if c.ticket_id is not None:
        a["tickets"] += 1


def _row(key, a):
    day, agent, group, channel = key
    return {"day": day, "agent": agent, "group": group, "channel": channel, "conversations": a["n"],
            "served": a["served"], "first_response_avg_seconds": _avg(a["fr_sum"], a["fr_n"]),
            "handling_avg_seconds": _avg(a["h_sum"], a["h_n"]), "abandoned": a["abandoned"],
            "abandonment_rate_percent": _pct(a["abandoned"], a["n"]), "transferred": a["transferred"],
            "transfer_rate_percent": _pct(a["transferred"], a["n"]), "csat_count": a["csat_n"],
            "csat_avg": _avg(a["csat_sum"], a["csat_n"]), "compensation_fen": a["fen"],
            "tickets_opened": a["tickets"], "qa_score": None}


def statistics_csv(result):
    """The rows of ``statistics(...)`` as CSV (UTF-8 with BOM, the COLUMNS header, empty cell for None)."""
    return export.csv_text(COLUMNS, result["items"])
