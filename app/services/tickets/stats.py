"""Ticket statistics: volume, backlog by age, SLA compliance, response/resolution times (JSON and CSV)."""
import datetime as dt

import peewee as pw

from app.platform import clock
from app.platform.timefmt import iso

from app.models.tickets import Ticket
from app.services.tickets import sla as tickets_sla

AGE_BUCKETS = (("lt_1h", 3600), ("1h_4h", 4 * 3600), ("4h_24h", 86400), ("1d_3d", 3 * 86400),
               ("3d_7d", 7 * 86400), ("ge_7d", None))
DIMENSIONS = {"category": Ticket.category, "department": Ticket.department, "priority": Ticket.priority,
              "channel": Ticket.channel}


def _pct(part, whole):
    return round(100.0 * part / whole, 2) if whole else None


def _avg(value):
    return None if value is None else round(float(value), 1)


def stats(start=None, end=None, now=None, progress=None):
    """Statistics for tickets created (volume) or resolved (compliance, times) in [start, end).

    Args:
        start: naive-UTC start (default end - 30 days).
        end: naive-UTC end (default now).
        now: the instant backlog ages are measured at.
        progress: optional ``progress(done, total)``, told after each section (the CLI's bar).

    Returns:
        dict: window, volume{by_category, by_channel, total}, backlog{by_age, by_department, total},
        sla{by_category, by_department, by_priority, overall}, times{first_response_avg_secs, ...}.
    """
    now = now or clock.now()
    end = end or now
    start = start or end - dt.timedelta(days=30)
    created = (Ticket.created_at >= start) & (Ticket.created_at < end)
    out = {"window": {"from": iso(start), "to": iso(end)}, "volume": {}, "backlog": {},
           "sla": {}, "times": {}}
    for dim in ("category", "channel"):
        col = DIMENSIONS[dim]
        rows = Ticket.select(col.alias("k"), pw.fn.COUNT(Ticket.id).alias("n")).where(created).group_by(col).dicts()
        out["volume"][f"by_{dim}"] = {r["k"]: r["n"] for r in rows}
    out["volume"]["total"] = sum(out["volume"]["by_category"].values())
    step = _steps(progress, SECTIONS)
    step()

    open_ = Ticket.terminal == False  # noqa: E712
    buckets, lower = [], None
    for name, secs in AGE_BUCKETS:
        cond = open_
        if secs is not None:
            cond &= Ticket.created_at > now - dt.timedelta(seconds=secs)
        if lower is not None:
            cond &= Ticket.created_at <= now - dt.timedelta(seconds=lower)
        buckets.append(pw.fn.SUM(pw.Case(None, [(cond, 1)], 0)).alias(name))
        lower = secs
    row = Ticket.select(*buckets).where(open_).dicts().first() or {}
    out["backlog"]["by_age"] = {name: int(row.get(name) or 0) for name, _ in AGE_BUCKETS}
    out["backlog"]["by_department"] = {
        r["k"]: r["n"] for r in Ticket.select(Ticket.department.alias("k"), pw.fn.COUNT(Ticket.id).alias("n"))
        .where(open_).group_by(Ticket.department).dicts()}
    out["backlog"]["total"] = sum(out["backlog"]["by_age"].values())
    step()

    resolved = Ticket.resolved_at.is_null(False) & (Ticket.resolved_at >= start) & (Ticket.resolved_at < end)
    responded = Ticket.first_response_at.is_null(False) & created
    res_ok = pw.fn.SUM(pw.Case(None, [(Ticket.resolution_breached == False, 1)], 0))  # noqa: E712
    resp_ok = pw.fn.SUM(pw.Case(None, [(Ticket.response_breached == False, 1)], 0))  # noqa: E712

    def compliance(group=None):
        cols = [pw.fn.COUNT(Ticket.id).alias("n"), res_ok.alias("ok"),
                pw.fn.AVG(Ticket.resolution_secs).alias("avg_res"),
                pw.fn.AVG(Ticket.resolution_business_secs).alias("avg_res_biz")]
        q1 = Ticket.select(*([group.alias("k")] if group is not None else []), *cols).where(resolved)
        cols2 = [pw.fn.COUNT(Ticket.id).alias("n"), resp_ok.alias("ok"),
                 pw.fn.AVG(Ticket.first_response_secs).alias("avg_fr")]
        q2 = Ticket.select(*([group.alias("k")] if group is not None else []), *cols2).where(responded)
        if group is not None:
            q1, q2 = q1.group_by(group), q2.group_by(group)
        res = {r.get("k"): r for r in q1.dicts()}
        resp = {r.get("k"): r for r in q2.dicts()}
        result = {}
        for k in sorted(set(res) | set(resp), key=lambda x: str(x)):
            a, b = res.get(k) or {}, resp.get(k) or {}
            result[k] = {"resolved": a.get("n") or 0,
                         "resolution_met_pct": _pct(int(a.get("ok") or 0), a.get("n") or 0),
                         "responded": b.get("n") or 0,
                         "first_response_met_pct": _pct(int(b.get("ok") or 0), b.get("n") or 0),
                         "first_response_avg_secs": _avg(b.get("avg_fr")),
                         "resolution_avg_secs": _avg(a.get("avg_res")),
                         "resolution_avg_business_secs": _avg(a.get("avg_res_biz"))}
        return result

    for dim in ("category", "department", "priority"):
        out["sla"][f"by_{dim}"] = compliance(DIMENSIONS[dim])
        step()
    overall = compliance().get(None) or {}
    out["sla"]["overall"] = overall
    out["sla"]["breached_open"] = Ticket.select().where(open_ & (tickets_sla.state_expr() == "breached")).count()
    out["sla"]["warning_open"] = Ticket.select().where(open_ & (tickets_sla.state_expr() == "warning")).count()
    out["times"] = {k: overall.get(k) for k in ("first_response_avg_secs", "resolution_avg_secs",
                                                  "resolution_avg_business_secs")}
    step()
    return out


SECTIONS = 6  # volume, backlog, SLA by category / department / priority, overall


def _steps(progress, total):
    """A callable telling ``progress`` one more of ``total`` sections done (nothing without ``progress``)."""
    done = [0]

    def step():
        done[0] += 1
        if progress is not None:
            progress(done[0], total)
    return step


def to_csv(data):
    """Long-format CSV (section, dimension, key, metric, value) of ``stats()``."""
    from app.platform.export import csv_text
    rows = []
    for dim in ("category", "channel"):
        for k, n in data["volume"][f"by_{dim}"].items():
            rows.append(["volume", dim, k, "tickets", n])
    rows.append(["volume", "all", "", "tickets", data["volume"]["total"]])
    for k, n in data["backlog"]["by_age"].items():
        rows.append(["backlog", "age", k, "open_tickets", n])
    for k, n in data["backlog"]["by_department"].items():
        rows.append(["backlog", "department", k, "open_tickets", n])
    for dim in ("category", "department", "priority"):
        for k, metrics in data["sla"][f"by_{dim}"].items():
            for m, v in metrics.items():
                rows.append(["sla", dim, k, m, "" if v is None else v])
    for m, v in data["sla"]["overall"].items():
        rows.append(["sla", "all", "", m, "" if v is None else v])
    return csv_text(["section", "dimension", "key", "metric", "value"], rows)
