"""Job runs: one row per (job, run key) so a job id or a periodic tick runs once across all workers."""
import peewee as pw

from app.platform import clock
from app.db import BaseModel



class JobRun(BaseModel):
    job = pw.CharField(max_length=200)
    # the RQ job id, or "tick-YYYYmmddHHMM" (UTC) for a periodic tick
    run_key = pw.CharField(max_length=200)
    scheduled_for = pw.DateTimeField(null=True)
    runner = pw.CharField(max_length=16)  # inline | rq | ticker | cron
    status = pw.CharField(max_length=16)  # running | succeeded | failed
    attempts = pw.IntegerField(default=1)
    # compare-and-set token: whoever wrote it owns the running attempt
    token = pw.CharField(max_length=32)
    started_at = pw.DateTimeField(default=clock.now)
    finished_at = pw.DateTimeField(null=True)
    error = pw.TextField(null=True)

    class Meta:
        table_name = "job_run"
        indexes = ((("job", "run_key"), True), (("job", "started_at"), False))
