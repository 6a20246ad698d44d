"""Ticket jobs: the minute-level SLA watcher (stall warnings and escalations)."""
from app.db import connection

PERIODIC = [("jobs.tickets.sla_watch", "* * * * *")]


def sla_watch():
    """One SLA-watch tick: warnings and escalations recorded exactly once across ticks and workers.

    Returns:
        dict: warnings, breaches recorded by this tick.
    """
    from app.services.tickets import sla as tickets_sla
    with connection():
        return tickets_sla.watch()
