"""Customer service (客服): agents' presence and lock, conversations (the queue), their events, complaints, calls, reviews."""
import peewee as pw

from app.db import BaseModel
from app.platform import clock


class ServiceGroup(BaseModel):
    """A skill group mirrored from the ``service`` policy: the row locked while its queue cap is checked."""
    code = pw.CharField(max_length=64, unique=True)
    updated_at = pw.DateTimeField(default=clock.now)


class ServiceAgent(BaseModel):
    """An agent's presence and lock (客服锁): the lock is closed while ``serving >= capacity``."""
    staff_no = pw.CharField(max_length=64, unique=True)
    status = pw.CharField(max_length=16, default="offline")  # online | away | offline
    groups = pw.TextField(default="")  # " general vip " (padded, like Staff.roles)
    capacity = pw.IntegerField(default=1)
    serving = pw.IntegerField(default=0)
    heartbeat_at = pw.DateTimeField(null=True)
    left_at = pw.DateTimeField(null=True)  # its live connection closed at (offline after the grace)
    last_assigned_at = pw.DateTimeField(null=True)
    updated_at = pw.DateTimeField(default=clock.now)

    class Meta:
        indexes = ((("status", "serving"), False),)


class ServiceConversation(BaseModel):
    """One user's request for service: queued -> serving -> closed (the queue is the queued rows)."""
    user_id = pw.CharField(max_length=200, index=True)
    group = pw.CharField(max_length=64)
    channel = pw.CharField(max_length=16, default="app")
    state = pw.CharField(max_length=16)  # queued | serving | closed
    priority = pw.IntegerField(default=0)
    priority_rule = pw.CharField(max_length=200, null=True)
    policy_version = pw.CharField(max_length=64)
    facts = pw.TextField(default="{}")
    topic = pw.TextField(default="")
    queued_at = pw.DateTimeField(null=True, index=True)  # statistics and the floor's window read by it
    agent = pw.CharField(max_length=64, null=True, index=True)
    assigned_at = pw.DateTimeField(null=True)
    user_seen_at = pw.DateTimeField()
    user_left_at = pw.DateTimeField(null=True)
    token_hash = pw.CharField(max_length=64)
    last_seq = pw.IntegerField(default=0)
    requeues = pw.IntegerField(default=0)
    closed_at = pw.DateTimeField(null=True, index=True)  # the floor: abandoned in the window, handled today
    close_reason = pw.CharField(max_length=32, null=True)
    close_category = pw.CharField(max_length=64, null=True)
    close_summary = pw.TextField(null=True)
    closed_by = pw.CharField(max_length=100, null=True)
    complaint_id = pw.BigIntegerField(null=True)
    ticket_id = pw.BigIntegerField(null=True)
    csat_score = pw.IntegerField(null=True)
    csat_comment = pw.TextField(null=True)
    csat_at = pw.DateTimeField(null=True)
    created_at = pw.DateTimeField(default=clock.now)

    class Meta:
        indexes = ((("state", "group", "priority", "queued_at"), False),
                   (("group", "ticket_id"), False))  # the floor: tickets of a group (SLA at risk)


# one open conversation per user, whichever process asks
ServiceConversation.add_index(ServiceConversation.index(
    ServiceConversation.user_id, unique=True, where=(ServiceConversation.state != "closed"),
    name="service_conversation_one_open"))


class ServiceEvent(BaseModel):
    """Everything said or done in a conversation, in order (``seq`` per conversation; SSE ids)."""
    conversation = pw.BigIntegerField()
    seq = pw.IntegerField()
    kind = pw.CharField(max_length=32)  # message | queued | assigned | transferred | requeued | closed | ...
    sender = pw.CharField(max_length=16)  # user | agent | system
    audience = pw.CharField(max_length=8, default="all")  # all | user | agent
    staff_no = pw.CharField(max_length=64, null=True, index=True)  # the agent who should see it
    body = pw.TextField()
    created_at = pw.DateTimeField(default=clock.now)

    class Meta:
        indexes = ((("conversation", "seq"), True),)


class ServiceComplaint(BaseModel):
    """A complaint (客诉): exactly one user, ends as exactly one ticket."""
    user_id = pw.CharField(max_length=200, index=True)
    source = pw.CharField(max_length=16)  # chat | call | review
    category = pw.CharField(max_length=64)
    summary = pw.TextField(default="")
    conversation_id = pw.BigIntegerField(null=True)
    ticket_id = pw.BigIntegerField(unique=True)
    policy_version = pw.CharField(max_length=64, null=True)
    rule = pw.CharField(max_length=200, null=True)
    created_by = pw.CharField(max_length=100)
    created_at = pw.DateTimeField(default=clock.now)
    updated_at = pw.DateTimeField(default=clock.now)


class ServiceCall(BaseModel):
    """A call-center record (电话), logged by the call center through the API."""
    external_ref = pw.CharField(max_length=200, unique=True)
    user_id = pw.CharField(max_length=200, index=True)
    staff_no = pw.CharField(max_length=64, null=True)
    direction = pw.CharField(max_length=8)
    started_at = pw.DateTimeField()
    duration_seconds = pw.IntegerField()
    recording_ref = pw.CharField(max_length=1000, null=True)
    summary = pw.TextField(default="")
    complaint_id = pw.BigIntegerField(null=True)
    created_by = pw.CharField(max_length=100)
    created_at = pw.DateTimeField(default=clock.now)


class ServiceReview(BaseModel):
    """A review or feedback (评价/意见反馈) posted by another system; the review ruleset decides on a complaint."""
    external_ref = pw.CharField(max_length=200, unique=True)
    source = pw.CharField(max_length=32)
    user_id = pw.CharField(max_length=200, index=True)
    rating = pw.IntegerField()
    text = pw.TextField(default="")
    order_no = pw.CharField(max_length=200, null=True)
    complaint_id = pw.BigIntegerField(null=True)
    rule = pw.CharField(max_length=200, null=True)
    policy_version = pw.CharField(max_length=64)
    created_at = pw.DateTimeField(default=clock.now)


class ServiceNode(BaseModel):
    """A process serving live streams, and how it fans out (``redis`` or ``local``): /readyz warns on several local ones."""
    node_id = pw.CharField(max_length=200, unique=True)
    mode = pw.CharField(max_length=16)
    seen_at = pw.DateTimeField()



class ServiceCompensation(BaseModel):
    """A red packet (红包赔付) an agent pays a user: paid within the agent's limits, else waits for approval."""
    user_id = pw.CharField(max_length=200, index=True)
    staff_no = pw.CharField(max_length=64)
    amount_fen = pw.BigIntegerField()
    reason = pw.CharField(max_length=64)
    note = pw.TextField(default="")
    conversation_id = pw.BigIntegerField(null=True)
    ticket_id = pw.BigIntegerField(null=True)
    state = pw.CharField(max_length=16)  # paid | pending_approval | rejected
    business_date = pw.CharField(max_length=10)  # the agent's budget day (UTC date)
    policy_version = pw.CharField(max_length=64)
    rule = pw.CharField(max_length=200)
    journal_id = pw.BigIntegerField(null=True)
    decided_by = pw.CharField(max_length=64, null=True)
    decided_at = pw.DateTimeField(null=True)
    created_at = pw.DateTimeField(default=clock.now)

    class Meta:
        indexes = ((("staff_no", "business_date"), False), (("business_date", "state"), False))



class ServiceAction(BaseModel):
    """An action an agent takes in the shop for a user (补开发票, 退换货, 取消订单): exactly once per key."""
    key = pw.CharField(max_length=300, unique=True)  # client + Idempotency-Key
    request_digest = pw.CharField(max_length=64)
    kind = pw.CharField(max_length=16)  # invoice | return | cancel
    order_no = pw.CharField(max_length=200, index=True)
    user_id = pw.CharField(max_length=200, null=True)
    staff_no = pw.CharField(max_length=64)
    conversation_id = pw.BigIntegerField(null=True)
    ticket_id = pw.BigIntegerField(null=True)
    params = pw.TextField(default="{}")
    state = pw.CharField(max_length=16)  # pending | done | failed
    attempts = pw.IntegerField(default=0)
    response = pw.TextField(null=True)  # the connector's answer
    error = pw.TextField(null=True)
    policy_version = pw.CharField(max_length=64)
    rule = pw.CharField(max_length=200)
    created_at = pw.DateTimeField(default=clock.now)
    updated_at = pw.DateTimeField(default=clock.now)


class ServiceAlert(BaseModel):
    """One alert episode: a monitored value over its ``monitoring`` threshold (open) until it is back under (recovered)."""
    rule = pw.CharField(max_length=200)  # the threshold's policy path, e.g. alerts.groups.vip.queue_length
    metric = pw.CharField(max_length=64)  # queue_length | longest_wait_seconds | refusal_rate_percent | ...
    scope = pw.CharField(max_length=64)  # a skill group code, or "*" for the whole desk
    state = pw.CharField(max_length=16)  # open | recovered
    threshold = pw.BigIntegerField()
    value = pw.BigIntegerField()  # the value that opened the episode
    peak = pw.BigIntegerField()  # the worst value seen while open
    last_value = pw.BigIntegerField()
    policy_version = pw.CharField(max_length=64)
    opened_at = pw.DateTimeField()
    evaluated_at = pw.DateTimeField()
    recovered_at = pw.DateTimeField(null=True)
    acknowledged_by = pw.CharField(max_length=64, null=True)
    acknowledged_at = pw.DateTimeField(null=True)
    acknowledge_note = pw.TextField(null=True)

    class Meta:
        indexes = ((("state", "opened_at"), False),)


# one open episode per (metric, scope), whichever process evaluates
ServiceAlert.add_index(ServiceAlert.index(ServiceAlert.metric, ServiceAlert.scope, unique=True,
                                          where=(ServiceAlert.state == "open"), name="service_alert_one_open"))


MODELS = [ServiceGroup, ServiceAgent, ServiceConversation, ServiceEvent, ServiceComplaint, ServiceCall,
          ServiceReview, ServiceNode, ServiceCompensation,
          ServiceAction, ServiceAlert]
