"""Cross-cutting storage: API keys, idempotency records, audit log, migrations ledger."""
import datetime as dt

import peewee as pw

from app.db import BaseModel


def utcnow():
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class SchemaMigration(BaseModel):
    name = pw.CharField(max_length=200, primary_key=True)
    applied_at = pw.DateTimeField(default=utcnow)


class ApiKey(BaseModel):
    key_id = pw.CharField(max_length=32, unique=True)
    name = pw.CharField(max_length=200)
    secret_hash = pw.CharField(max_length=64)
    scopes = pw.TextField()  # space separated
    created_at = pw.DateTimeField(default=utcnow)
    revoked_at = pw.DateTimeField(null=True)


class IdempotencyRecord(BaseModel):
    client = pw.CharField(max_length=64)
    key = pw.CharField(max_length=200)
    operation = pw.CharField(max_length=100)
    request_digest = pw.CharField(max_length=64)
    status_code = pw.IntegerField()
    response = pw.TextField()
    created_at = pw.DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("client", "key"), True),)


class AuditLog(BaseModel):
    at = pw.DateTimeField(default=utcnow, index=True)
    actor = pw.CharField(max_length=200)
    action = pw.CharField(max_length=100)
    subject = pw.CharField(max_length=200, null=True)
    detail = pw.TextField(null=True)  # JSON
