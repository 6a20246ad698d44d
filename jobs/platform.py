"""Platform housekeeping jobs."""
import datetime as dt

from jobs import job

PERIODIC = [
    ("jobs.platform.prune_job_runs", "17 3 * * *"),
]


@job(retries=2)  # a bounded DELETE of old rows: safe to repeat
def prune_job_runs():
    """Delete finished ``job_run`` rows older than JOB_RUN_RETENTION_DAYS (default 30).

    Returns:
        number of rows deleted.
    """
    from flask import current_app

    from app.db import write_transaction
    from app.platform import clock
    from app.models.jobs import JobRun
    days = int(current_app.config.get("JOB_RUN_RETENTION_DAYS", 30))
    cutoff = clock.now() - dt.timedelta(days=days)
    with write_transaction():
        return (JobRun.delete()
                .where((JobRun.started_at < cutoff) & (JobRun.status != "running")).execute())
