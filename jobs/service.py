"""Service-desk jobs: the presence sweep (timeouts told to users, auto-assignment) every few seconds; the monitor
(alert thresholds, floor gauges) every minute; QA sampling hourly.

RQ's cron (and the in-process ticker) fire once a minute; the tick's job loops inside the minute,
sweeping every ``sweep_seconds`` of the service policy, and stops before the next tick. The tick is
claimed in ``job_run``, so one loop runs at a time however many workers or tickers there are.
State never waits for the sweep: every read and action applies the timeouts due by then.
"""
import time

from app.db import connection

# qa_sample first: the sweep's tick loops for most of the minute
PERIODIC = [("jobs.service.qa_sample", "20 * * * *"), ("jobs.service.monitor", "* * * * *"),
            ("jobs.service.sweep", "* * * * *")]

LOOP_SECONDS = 50  # leaves the rest of the minute so the next tick's loop never overlaps this one


def sweep_once():
    """One sweep: every due agent/user timeout applied and told, then free agents offered the queue heads."""
    from app.services.service import desk
    with connection():
        out = desk.expire()
        out["assigned"] = desk.dispatch()
        return out


def sweep(seconds=LOOP_SECONDS):
    """Sweep repeatedly for ``seconds`` (every ``sweep_seconds`` of the policy).

    Returns:
        totals: agents and users timed out, users assigned, sweeps run.
    """
    from app.services.service.policy import current
    totals = {"agents": 0, "users": 0, "assigned": 0, "sweeps": 0}
    end = time.monotonic() + seconds
    while True:
        started = time.monotonic()
        for k, v in sweep_once().items():
            totals[k] += v
        totals["sweeps"] += 1
        with connection():
            interval = current().seconds("sweep_seconds", 3)
        if started + interval >= end:
            return totals
        time.sleep(max(0.0, started + interval - time.monotonic()))


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
