"""Outbox: messages written in the transaction that caused them, fanned out to webhooks, delivered by job."""
import peewee as pw

from app.platform import clock
from app.db import BaseModel



class OutboxMessage(BaseModel):
    topic = pw.CharField(max_length=100, index=True)  # e.g. ticket.escalated
    dedupe_key = pw.CharField(max_length=200, null=True, unique=True)  # same key -> one message
    subject = pw.CharField(max_length=200, null=True)  # e.g. ticket:42
    payload = pw.TextField()  # JSON
    created_at = pw.DateTimeField(default=clock.now)


class Webhook(BaseModel):
    name = pw.CharField(max_length=200)
    url = pw.CharField(max_length=1000)
    secret = pw.TextField()  # "fernet:<token>": encrypted at rest (app.platform.crypto)
    topics = pw.TextField(default="*")  # space separated patterns: "*", "ticket.*", "ticket.escalated"
    active = pw.BooleanField(default=True)
    created_at = pw.DateTimeField(default=clock.now)


class OutboxDelivery(BaseModel):
    message = pw.ForeignKeyField(OutboxMessage, backref="deliveries", on_delete="CASCADE")
    webhook = pw.ForeignKeyField(Webhook, backref="deliveries", on_delete="CASCADE")
    status = pw.CharField(max_length=16, default="pending")  # pending | delivered | dead
    attempts = pw.IntegerField(default=0)
    next_attempt_at = pw.DateTimeField(default=clock.now)
    last_status = pw.IntegerField(null=True)
    last_error = pw.TextField(null=True)
    delivered_at = pw.DateTimeField(null=True)
    created_at = pw.DateTimeField(default=clock.now)

    class Meta:
        indexes = ((("message", "webhook"), True), (("status", "next_attempt_at"), False))


class OutboxAttempt(BaseModel):
    delivery = pw.ForeignKeyField(OutboxDelivery, backref="attempt_rows", on_delete="CASCADE", index=True)
    at = pw.DateTimeField(default=clock.now)
    status_code = pw.IntegerField(null=True)
    error = pw.TextField(null=True)
    duration_ms = pw.IntegerField()


MODELS = [OutboxMessage, Webhook, OutboxDelivery, OutboxAttempt]
