"""Service operations (客服运营): the presence log, rosters and their exceptions, QA reviews (质检)."""
import peewee as pw

from app.db import BaseModel
from app.platform import clock


class ServicePresence(BaseModel):
    """Append-only log of an agent's presence changes (online | away | offline): attendance is derived from it."""
    staff_no = pw.CharField(max_length=64)
    status = pw.CharField(max_length=16)
    reason = pw.CharField(max_length=32)  # go-online | go-away | go-offline | agent-timeout | agent-disconnected
    at = pw.DateTimeField()  # when the change took effect (a timeout: the instant the heartbeat deadline passed)
    created_at = pw.DateTimeField(default=clock.now)

    class Meta:
        indexes = ((("staff_no", "at"), False),)


class ServiceRoster(BaseModel):
    """An agent's weekly shift pattern in one skill group (local times of the workforce calendar's zone)."""
    staff_no = pw.CharField(max_length=64)
    group = pw.CharField(max_length=64)
    week = pw.TextField()  # {"mon": [["09:00", "18:00"]], ...}
    valid_from = pw.CharField(max_length=10)  # local date, inclusive
    valid_to = pw.CharField(max_length=10, null=True)  # local date, inclusive; None: open-ended
    updated_by = pw.CharField(max_length=100)
    updated_at = pw.DateTimeField(default=clock.now)

    class Meta:
        indexes = ((("staff_no", "group"), True),)


class ServiceShiftException(BaseModel):
    """A dated exception to a roster: ``leave`` (whole day, or a time range) or an ``extra`` shift."""
    staff_no = pw.CharField(max_length=64, index=True)
    day = pw.CharField(max_length=10)  # local date
    kind = pw.CharField(max_length=8)  # leave | extra
    group = pw.CharField(max_length=64, null=True)  # extra: the group worked; leave: None (every group)
    start_minute = pw.IntegerField(null=True)  # local minutes; None with end None: the whole day
    end_minute = pw.IntegerField(null=True)
    note = pw.TextField(default="")
    created_by = pw.CharField(max_length=100)
    created_at = pw.DateTimeField(default=clock.now)

    class Meta:
        indexes = ((("day", "staff_no"), False),)


class ServiceQaReview(BaseModel):
    """A quality review (质检) of one conversation or ticket: sampled or picked by hand, scored, acknowledged or
    appealed and resolved. One review per subject, ever (the job may run twice)."""
    subject_kind = pw.CharField(max_length=16)  # conversation | ticket
    subject_id = pw.BigIntegerField()
    agent = pw.CharField(max_length=64, index=True)  # the staff member reviewed
    group = pw.CharField(max_length=64, null=True)
    channel = pw.CharField(max_length=16, null=True)
    period = pw.CharField(max_length=10)  # local date the subject belongs to (closed / created)
    source = pw.CharField(max_length=16)  # sample | manual
    stratum = pw.CharField(max_length=64, null=True)
    inspector = pw.CharField(max_length=64, null=True, index=True)
    state = pw.CharField(max_length=16)  # assigned | scored | acknowledged | appealed | resolved
    score = pw.IntegerField(null=True)
    items = pw.TextField(default="{}")  # item -> points
    fatal = pw.TextField(default="[]")  # fatal items found
    comment = pw.TextField(default="")
    scored_at = pw.DateTimeField(null=True)
    appeal_reason = pw.TextField(null=True)
    appealed_at = pw.DateTimeField(null=True)
    acknowledged_at = pw.DateTimeField(null=True)
    resolution = pw.CharField(max_length=16, null=True)  # upheld | amended
    resolved_by = pw.CharField(max_length=64, null=True)
    resolved_at = pw.DateTimeField(null=True)
    resolution_note = pw.TextField(null=True)
    policy_version = pw.CharField(max_length=64)  # of the last decision on it (sampling, score, resolution)
    rule = pw.CharField(max_length=200)
    created_at = pw.DateTimeField(default=clock.now)
    updated_at = pw.DateTimeField(default=clock.now)

    class Meta:
        indexes = ((("subject_kind", "subject_id"), True), (("period", "agent"), False),
                   (("state", "inspector"), False))


MODELS = [ServicePresence, ServiceRoster, ServiceShiftException, ServiceQaReview]
