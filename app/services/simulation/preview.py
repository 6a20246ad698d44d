"""Period-end preview: what the next deduction and points expiry do to every member, computed by the live code in a rolled-back transaction."""
import datetime as dt
from types import SimpleNamespace

from app.db import write_transaction
from app.errors import Problem
from app.models.membership import Member
from app.platform import clock, timefmt
from app.services.membership import growth
from app.services.membership import ledger_port as ml
from app.services.membership import policy as mp


class _Undo(Exception):
    """Raised inside the preview transaction so nothing it did is kept."""


def next_deduction(cfg, now):
    """The next calendar deduction instant after ``now`` (naive UTC), or None (anniversary: pass ``at``)."""
    d = cfg.deduction
    if not d.get("method") or d.get("schedule", "calendar") != "calendar":
        return None
    mm, dd = (int(x) for x in d.get("date", "01-01").split("-"))
    loc = mp.local(cfg, now)
    for year in (loc.year, loc.year + 1):
        due = dt.datetime(year, mm, dd, tzinfo=cfg.tz)
        if due > loc:
            return mp.to_utc(due)
    return None


def _next_expiry(cfg, now):
    """The policy's next points expiry boundary after ``now`` (what a point earned now+... loses at)."""
    exp = cfg.points.get("expiry") or {}
    if exp.get("mode") in ("natural_year_end", "fiscal_year_end"):
        # the boundary that closes the current year is where lots earned years_after earlier expire
        probe = SimpleNamespace(points={"expiry": dict(exp, years_after=0)}, tz=cfg.tz)
        return mp.points_expiry(probe, now)
    return None


def resolve_at(cfg, at):
    """The preview instant: ``at`` (RFC 3339) or the next deduction date, else the next expiry boundary."""
    if at:
        return timefmt.parse(at, "/at", offset_required=True)
    now = clock.now()
    found = next_deduction(cfg, now) or _next_expiry(cfg, now)
    if found is None:
        raise Problem(422, "preview-needs-at", "Preview needs a date",
                      "the policy has no calendar deduction or year-end expiry; give an instant (at)")
    return found


def member_preview(cfg, member_ref, at):
    """One member: the deduction ``deduct_member`` would apply at ``at`` (rolled back) and the points lost."""
    row = Member.get(Member.member_ref == member_ref)
    out = {"member_id": member_ref, "level": row.level, "growth": row.growth, "deduct": 0,
           "growth_after": row.growth, "level_after": row.level, "demoted": False, "deduction_rule": None}
    if cfg.deduction.get("method"):
        try:
            with write_transaction():
                result = growth.deduct_member(cfg, member_ref, at)
                raise _Undo(result)
        except _Undo as undo:
            result = undo.args[0]
        if result:
            change = result.get("level_change")
            out.update(deduct=result["deducted"], growth_after=result["growth"],
                       level_after=change["to"] if change else row.level,
                       demoted=bool(change and change["kind"] == "demotion"),
                       deduction_rule=result["entry"]["rule"])
    balance = expiring = 0
    first_expiry = None
    if cfg.points:
        now = clock.now()
        for lot in ml.points_lots(cfg, member_ref):
            exp = dt.datetime.fromisoformat(lot["expires_at"].rstrip("Z")) if lot["expires_at"] else None
            if exp is not None and exp <= now:
                continue
            remaining = int(lot["remaining"] or 0)
            balance += remaining
            if exp is not None and exp <= at:
                expiring += remaining
                first_expiry = min(first_expiry or exp, exp)
    out.update(points=balance, points_expiring=expiring, points_after=balance - expiring,
               points_expire_at=timefmt.iso(first_expiry))
    return out


def period_end(at=None, cursor=None, limit=None, progress=None):
    """Every member (by member id, past ``cursor``, at most ``limit``) at the next period end under the active policy.

    Returns:
        {"at", "policy_version", "summary", "items", "next_cursor"} (next_cursor: the last member id of a
        full page, None on the last). ``progress(done, total)`` is told after each member.
    """
    cfg = mp.current()
    instant = resolve_at(cfg, at)
    query = Member.select(Member.member_ref).order_by(Member.member_ref)
    if cursor:
        query = query.where(Member.member_ref > cursor)
    if limit:
        query = query.limit(limit + 1)
    refs = [r for (r,) in query.tuples()]
    more = bool(limit) and len(refs) > limit
    refs = refs[:limit] if limit else refs
    items = []
    for ref in refs:
        items.append(member_preview(cfg, ref, instant))
        if progress is not None:
            progress(len(items), len(refs))
    summary = {"members": len(items), "demoted": sum(1 for i in items if i["demoted"]),
               "growth_deducted": sum(i["deduct"] for i in items),
               "points_expiring": sum(i["points_expiring"] for i in items),
               "members_losing_points": sum(1 for i in items if i["points_expiring"])}
    return {"at": timefmt.iso(instant), "policy_version": cfg.version, "summary": summary, "items": items,
            "next_cursor": refs[-1] if more and refs else None}


CSV_FIELDS = ("member_id", "level", "level_after", "demoted", "growth", "deduct", "growth_after", "points",
              "points_expiring", "points_after", "points_expire_at", "deduction_rule")


def to_csv(result):
    from app.platform.export import csv_text
    return csv_text(CSV_FIELDS, ([item[f] for f in CSV_FIELDS] for item in result["items"]))
