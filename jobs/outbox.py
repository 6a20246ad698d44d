"""Outbox jobs: deliver due webhook deliveries (signed, retried with backoff, every attempt recorded)."""
from app.db import connection

PERIODIC = [("jobs.outbox.deliver_due", "* * * * *"), ("jobs.outbox.prune", "17 3 * * *")]


def deliver_due(limit=100):
    """Deliver every due pending delivery once (at-least-once; receivers dedupe by message id).

    Args:
        limit: deliveries per run.

    Returns:
        dict of counts: delivered, retry, dead.
    """
    from app.platform import outbox
    with connection():
        return outbox.deliver_due(limit=limit)


def prune(older_than_days=30):
    """Delete settled outbox messages older than ``older_than_days`` (their deliveries and attempts too)."""
    from app.platform import outbox
    with connection():
        return outbox.prune(older_than_days=older_than_days)
