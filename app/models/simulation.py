"""Simulation storage: runs requested through the API (status, progress, report) and shadow evaluations with their differences."""
import peewee as pw

from app.db import BaseModel
from app.platform import clock


class SimulationRun(BaseModel):
    """One simulation requested through the API; the job fills in progress and the report."""
    run_id = pw.CharField(max_length=40, unique=True)
    status = pw.CharField(max_length=16)  # queued | running | succeeded | failed
    spec = pw.TextField()  # JSON: candidate, baseline, events, from, to, members
    done = pw.BigIntegerField(default=0)
    total = pw.BigIntegerField(default=0)
    report = pw.TextField(null=True)  # canonical JSON report
    error = pw.TextField(null=True)
    created_by = pw.CharField(max_length=200)
    created_at = pw.DateTimeField(default=clock.now)
    started_at = pw.DateTimeField(null=True)
    finished_at = pw.DateTimeField(null=True)

    class Meta:
        table_name = "simulation_run"


class ShadowSet(BaseModel):
    """A candidate policy set evaluated beside the active one on live events (at most one running)."""
    version = pw.CharField(max_length=64)
    files = pw.TextField()  # JSON {"policies/..": text}
    status = pw.CharField(max_length=16, index=True)  # running | stopped
    started_by = pw.CharField(max_length=200)
    started_at = pw.DateTimeField(default=clock.now)
    stopped_at = pw.DateTimeField(null=True)

    class Meta:
        table_name = "shadow_set"


class ShadowDiff(BaseModel):
    """What the candidate would have done differently for one live event (one row per event and rule)."""
    shadow = pw.ForeignKeyField(ShadowSet, index=True)
    event_id = pw.CharField(max_length=100)
    member_ref = pw.CharField(max_length=100)
    kind = pw.CharField(max_length=16)  # growth | points | level
    rule = pw.CharField(max_length=200)
    active_amount = pw.BigIntegerField(default=0)
    candidate_amount = pw.BigIntegerField(default=0)
    detail = pw.TextField(null=True)
    at = pw.DateTimeField()

    class Meta:
        table_name = "shadow_diff"
        indexes = ((("shadow", "event_id", "kind", "rule"), True),)


MODELS = [SimulationRun, ShadowSet, ShadowDiff]
