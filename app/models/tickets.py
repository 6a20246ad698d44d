"""Tickets (工单): tickets, their history, comments, attachments, approvals, SLA events, auto actions, notices."""
import peewee as pw

from app.platform import clock
from app.db import BaseModel



class Ticket(BaseModel):
    category = pw.CharField(max_length=64, index=True)
    workflow = pw.CharField(max_length=64)
    state = pw.CharField(max_length=64, index=True)
    state_entered_at = pw.DateTimeField(default=clock.now)
    terminal = pw.BooleanField(default=False)
    title = pw.CharField(max_length=300)
    body = pw.TextField(default="")
    channel = pw.CharField(max_length=32, index=True)
    source = pw.CharField(max_length=32)  # system | agent | bot
    conversation_ref = pw.CharField(max_length=200, null=True)
    order_no = pw.CharField(max_length=200, null=True)
    order_status = pw.CharField(max_length=64, null=True)
    amount_fen = pw.BigIntegerField(null=True)
    user_id = pw.CharField(max_length=200, index=True)
    user_level = pw.CharField(max_length=64, null=True)
    user_paid = pw.BooleanField(default=False)
    department = pw.CharField(max_length=64, index=True)
    queue = pw.CharField(max_length=64, null=True)
    priority = pw.CharField(max_length=2, index=True)  # P1 (most urgent) .. P4
    assignee = pw.CharField(max_length=64, null=True, index=True)
    tags = pw.TextField(default="[]")  # JSON list
    created_by = pw.CharField(max_length=200)
    created_at = pw.DateTimeField(default=clock.now, index=True)
    updated_at = pw.DateTimeField(default=clock.now)
    resolved_at = pw.DateTimeField(null=True)
    closed_at = pw.DateTimeField(null=True)
    policy_version = pw.CharField(max_length=64)
    routing_rule = pw.CharField(max_length=200, null=True)
    priority_rule = pw.CharField(max_length=200, null=True)
    facts = pw.TextField(default="{}")  # JSON: the inputs routing/priority/guards saw
    # SLA: two clocks (response = first or next response; resolution). *_check_at is the next instant
    # the watcher must look at the clock (warning time, then due time, then NULL): indexed, so a tick
    # touches only tickets that need something.
    sla_calendar = pw.CharField(max_length=64, null=True)
    sla_paused_at = pw.DateTimeField(null=True)
    sla_state = pw.CharField(max_length=16, default="ok", index=True)  # ok | warning | breached
    escalation_level = pw.IntegerField(default=0)
    response_metric = pw.CharField(max_length=16, null=True)  # first_response | next_response
    response_started_at = pw.DateTimeField(null=True)
    response_warn_at = pw.DateTimeField(null=True)
    response_due_at = pw.DateTimeField(null=True)
    response_check_at = pw.DateTimeField(null=True, index=True)
    resolution_warn_at = pw.DateTimeField(null=True)
    resolution_due_at = pw.DateTimeField(null=True)
    resolution_check_at = pw.DateTimeField(null=True, index=True)
    response_breached = pw.BooleanField(default=False)
    resolution_breached = pw.BooleanField(default=False)
    first_response_at = pw.DateTimeField(null=True)
    first_response_secs = pw.BigIntegerField(null=True)  # wall seconds
    resolution_secs = pw.BigIntegerField(null=True)  # wall seconds
    resolution_business_secs = pw.BigIntegerField(null=True)


class TicketEvent(BaseModel):
    """History: who, when, what changed (field from -> to), under which policy version and rule."""
    ticket = pw.ForeignKeyField(Ticket, backref="events", on_delete="CASCADE", index=True)
    at = pw.DateTimeField(default=clock.now)
    actor = pw.CharField(max_length=200)
    kind = pw.CharField(max_length=32)
    field = pw.CharField(max_length=64, null=True)
    from_value = pw.TextField(null=True)
    to_value = pw.TextField(null=True)
    detail = pw.TextField(null=True)  # JSON
    policy_version = pw.CharField(max_length=64, null=True)
    rule = pw.CharField(max_length=200, null=True)


class TicketComment(BaseModel):
    ticket = pw.ForeignKeyField(Ticket, backref="comments", on_delete="CASCADE", index=True)
    at = pw.DateTimeField(default=clock.now)
    author = pw.CharField(max_length=200)
    author_kind = pw.CharField(max_length=16)  # staff | user | system
    visibility = pw.CharField(max_length=16)  # internal | public
    body = pw.TextField()


class TicketAttachment(BaseModel):
    ticket = pw.ForeignKeyField(Ticket, backref="attachments", on_delete="CASCADE", index=True)
    at = pw.DateTimeField(default=clock.now)
    ref = pw.CharField(max_length=1000)  # URL or object-store key: files are referenced, never stored
    name = pw.CharField(max_length=300)
    content_type = pw.CharField(max_length=200, null=True)
    size_bytes = pw.BigIntegerField(null=True)
    added_by = pw.CharField(max_length=200)


class TicketApproval(BaseModel):
    ticket = pw.ForeignKeyField(Ticket, backref="approvals", on_delete="CASCADE", index=True)
    at = pw.DateTimeField(default=clock.now)
    step = pw.CharField(max_length=64)  # the approval state
    level = pw.IntegerField()
    decision = pw.CharField(max_length=16)  # approve | reject
    by = pw.CharField(max_length=64)
    comment = pw.TextField(null=True)
    policy_version = pw.CharField(max_length=64)


class TicketSlaEvent(BaseModel):
    """One warning or breach per clock deadline: the unique key makes the watcher exactly-once."""
    ticket_id = pw.IntegerField()
    kind = pw.CharField(max_length=16)  # warning | breach
    metric = pw.CharField(max_length=16)  # first_response | next_response | resolution
    target_due_at = pw.DateTimeField()
    created_at = pw.DateTimeField(default=clock.now)
    tick = pw.CharField(max_length=32)  # the watcher tick that created it

    class Meta:
        indexes = ((("ticket_id", "kind", "metric", "target_due_at"), True), (("tick",), False))


class TicketActionRun(BaseModel):
    """An auto action executed once: unique (ticket, key) where key names the trigger and step."""
    ticket = pw.ForeignKeyField(Ticket, backref="action_runs", on_delete="CASCADE")
    key = pw.CharField(max_length=200)
    action = pw.CharField(max_length=64)
    params = pw.TextField()  # JSON
    result = pw.TextField(null=True)  # JSON
    at = pw.DateTimeField(default=clock.now)

    class Meta:
        indexes = ((("ticket", "key"), True),)


class TicketNotice(BaseModel):
    """A user-facing notice the app shows (status changes, replies)."""
    ticket = pw.ForeignKeyField(Ticket, backref="notices", on_delete="CASCADE")
    user_id = pw.CharField(max_length=200, index=True)
    at = pw.DateTimeField(default=clock.now)
    kind = pw.CharField(max_length=32)
    text = pw.TextField()


MODELS = [Ticket, TicketEvent, TicketComment, TicketAttachment, TicketApproval, TicketSlaEvent,
          TicketActionRun, TicketNotice]
