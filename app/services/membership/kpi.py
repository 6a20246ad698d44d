"""Membership KPIs (留存、复购、会员转化率、会员贡献率) per month: retention, repurchase, paid conversion, paid GMV share, levels."""
import datetime as dt
import re

import peewee as pw

from app.errors import Problem
from app.models.membership import Member, MemberEvent, PlanPeriod
from app.services.membership import policy as mp
from app.platform import timefmt

MAX_MONTHS = 36

FIELDS = ["period", "start", "end", "members", "active_members", "retained_members", "retention_rate",
          "buyers", "repeat_buyers", "repurchase_rate", "orders", "gmv_fen", "refunds_fen", "paid_gmv_fen",
          "paid_gmv_share", "paid_members", "new_paid_members", "paid_conversion_rate"]


def _month(text, name):
    if not isinstance(text, str) or not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", text):
        raise Problem(422, "validation-failed", "Validation failed", f"{name} must be YYYY-MM",
                      errors=[{"pointer": f"/query/{name}", "validator": "pattern", "message": "expected YYYY-MM"}])
    return int(text[:4]), int(text[5:])


def _ratio(num, den):
    return round(num / den, 4) if den else None


def _active(start, end):
    return {r for (r,) in MemberEvent.select(MemberEvent.member_ref).where(
        (MemberEvent.occurred_at >= start) & (MemberEvent.occurred_at < end)).distinct().tuples()}


def compute(month_from, month_to, progress=None):
    """KPI rows for each month in [month_from, month_to] (YYYY-MM, policy time zone), plus level distribution.

    Definitions: active = posted any event in the month; retention = active last month and this
    month / active last month; repurchase = members with >= 2 paid orders / buyers; paid GMV share =
    order amount paid while the member was paid / all order amount; paid conversion = members whose
    first paid period starts in the month / active members who had never been paid before it.
    ``progress(done, total)``, when given, is called after each month (the CLI's progress bar).
    """
    cfg = mp.current()
    y0, m0 = _month(month_from, "from")
    y1, m1 = _month(month_to, "to")
    months = (y1 - y0) * 12 + (m1 - m0) + 1
    if months < 1 or months > MAX_MONTHS:
        raise Problem(422, "validation-failed", "Validation failed", f"between 1 and {MAX_MONTHS} months, from <= to",
                      errors=[{"pointer": "/query/to", "validator": "range", "message": "bad period range"}])
    first_paid = dict(PlanPeriod.select(PlanPeriod.member_ref, pw.fn.MIN(PlanPeriod.start))
                      .group_by(PlanPeriod.member_ref).tuples())
    rows = []
    start_local = dt.datetime(y0, m0, 1, tzinfo=cfg.tz)
    prev_active = _active(mp.to_utc(mp.add_months(start_local, -1)), mp.to_utc(start_local))
    for i in range(months):
        lo_l = mp.add_months(start_local, i)
        lo, hi = mp.to_utc(lo_l), mp.to_utc(mp.add_months(start_local, i + 1))
        active = _active(lo, hi)
        orders = list(MemberEvent.select(MemberEvent.member_ref, pw.fn.COUNT(MemberEvent.id),
                                         pw.fn.SUM(MemberEvent.amount_fen))
                      .where((MemberEvent.type == "order_paid") & (MemberEvent.occurred_at >= lo)
                             & (MemberEvent.occurred_at < hi)).group_by(MemberEvent.member_ref).tuples())
        gmv = sum(int(a or 0) for _, _, a in orders)
        paid_gmv = int(MemberEvent.select(pw.fn.SUM(MemberEvent.amount_fen)).where(
            (MemberEvent.type == "order_paid") & (MemberEvent.paid_at_event == True)  # noqa: E712
            & (MemberEvent.occurred_at >= lo) & (MemberEvent.occurred_at < hi)).scalar() or 0)
        refunds = int(MemberEvent.select(pw.fn.SUM(MemberEvent.amount_fen)).where(
            (MemberEvent.type == "order_refunded") & (MemberEvent.occurred_at >= lo)
            & (MemberEvent.occurred_at < hi)).scalar() or 0)
        paid_members = PlanPeriod.select(PlanPeriod.member_ref).where(
            (PlanPeriod.start < hi) & (PlanPeriod.end > lo)).distinct().count()
        new_paid = {r for r, t in first_paid.items() if lo <= t < hi}
        never_paid_before = {r for r in active if r not in first_paid or first_paid[r] >= lo}
        retained = len(prev_active & active)
        repeat = sum(1 for _, n, _ in orders if n >= 2)
        rows.append({
            "period": f"{lo_l.year}-{lo_l.month:02d}", "start": timefmt.iso(lo), "end": timefmt.iso(hi),
            "members": Member.select().where(Member.joined_at < hi).count(),
            "active_members": len(active), "retained_members": retained,
            "retention_rate": _ratio(retained, len(prev_active)),
            "buyers": len(orders), "repeat_buyers": repeat, "repurchase_rate": _ratio(repeat, len(orders)),
            "orders": sum(n for _, n, _ in orders), "gmv_fen": gmv, "refunds_fen": refunds,
            "paid_gmv_fen": paid_gmv, "paid_gmv_share": _ratio(paid_gmv, gmv),
            "paid_members": paid_members, "new_paid_members": len(new_paid),
            "paid_conversion_rate": _ratio(len(new_paid & never_paid_before) , len(never_paid_before)),
        })
        prev_active = active
        if progress:
            progress(i + 1, months)
    levels = dict(Member.select(Member.level, pw.fn.COUNT(Member.id)).group_by(Member.level).tuples())
    distribution = [{"level": n, "members": levels.get(n, 0)} for n in cfg.level_names]
    return {"policy_version": cfg.version, "timezone": str(cfg.tz), "periods": rows,
            "level_distribution": distribution, "level_distribution_at": "now"}


def to_csv(report):
    """The periods as CSV (UTF-8 with a BOM, app.platform.export)."""
    from app.platform.export import csv_text
    return csv_text(FIELDS, ([row[k] for k in FIELDS] for row in report["periods"]))
