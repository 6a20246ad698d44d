"""Service-desk jobs: the presence sweep (timeouts materialised and told, then auto-assignment) every minute; the
monitor (alert thresholds, floor gauges) every minute; QA sampling hourly.

One quick pass per tick: the due agents and users are found with indexed queries over the live rows
(``service_agent.heartbeat_at``/``left_at`` where not offline, ``service_conversation.user_seen_at``/
``user_left_at`` where not closed), and only those are acted on, so a run with nothing due is a few
index lookups. It never holds the in-process ticker or an RQ worker for longer than that.
State never waits for the sweep: every read and action applies the timeouts due by then, and each live
stream applies its own on every keep-alive (``heartbeat_seconds``), so users hear of a timeout within a
keep-alive; the sweep catches whoever is not connected.
"""
from app.db import connection
from jobs import job

PERIODIC = [("jobs.service.qa_sample", "20 * * * *"), ("jobs.service.monitor", "* * * * *"),
            ("jobs.service.sweep", "* * * * *")]


@job(timeout=120)
def sweep():
    """One pass: every due agent/user timeout applied and told, then free agents offered the queue heads.

    Returns:
        {"agents": n, "users": n, "assigned": n}.
    """
    from app.services.service import desk
    with connection():
        out = desk.expire()
        out["assigned"] = desk.dispatch()
        return out


@job(timeout=120)
def monitor():
    """Evaluate the monitoring thresholds once (alerts opened/recovered, webhooks through the outbox) and set the
    floor gauges.

    Returns:
        {"opened": n, "recovered": n, "open": n}.
    """
    from app.services.service import monitoring
    with connection():
        out = monitoring.evaluate()
    return {"opened": len(out["opened"]), "recovered": len(out["recovered"]), "open": out["open"]}


@job(timeout=600)
def qa_sample(date=None):
    """Draw the QA sample of one local day (default: yesterday in the quality calendar's zone).

    Hourly, so a missed run is caught up; a second run of a day adds nothing (one review per conversation).

    Args:
        date: ``YYYY-MM-DD`` local date.

    Returns:
        what ``quality.sample_day`` returns (drawn, created, by stratum).
    """
    import datetime as dt
    from app.platform import clock
    from app.services.service import quality
    with connection():
        cfg = quality.current()
        day = dt.date.fromisoformat(date) if date else quality.local_day(cfg, clock.now()) - dt.timedelta(days=1)
        return quality.sample_day(day)
