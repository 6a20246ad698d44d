"""Service-desk jobs: the presence sweep (timeouts materialised and told, then auto-assignment).

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

PERIODIC = [("jobs.service.sweep", "* * * * *")]


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
