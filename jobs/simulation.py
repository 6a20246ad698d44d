"""Simulation jobs: a requested simulation run, shadow evaluation of live event batches (ids/keys only, own connection)."""
import logging

from app.db import connection
from jobs import job, progress

log = logging.getLogger(__name__)

PERIODIC = []


@job(timeout=6 * 3600)  # no retries: a run that failed is marked failed; the analyst starts a new one
def run(run_id):
    """Replay the stored simulation ``run_id`` and store its report.

    Returns:
        {"id", "status"} or None when the run is already finished.
    """
    from app.services.simulation import runs
    with connection():
        return runs.execute(run_id, progress=progress)


@job(retries=2)  # one unique diff row per (shadow, event, kind, rule) and rolled-back evaluations: safe to repeat
def shadow_events(shadow_id, event_ids):
    """Evaluate the running shadow set on these live events beside the active set; record the differences.

    Returns:
        {"events", "differences"}.
    """
    from app.services.simulation import shadow
    with connection():
        return shadow.evaluate_events(shadow_id, event_ids)
