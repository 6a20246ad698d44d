"""Cross-cutting storage: API keys, idempotency records, audit log, migrations ledger."""
import peewee as pw

from app.platform import clock
from app.db import BaseModel


class SchemaMigration(BaseModel):
    name = pw.CharField(max_length=200, primary_key=True)
    applied_at = pw.DateTimeField(default=clock.now)


class ApiKey(BaseModel):
    key_id = pw.CharField(max_length=32, unique=True)
    name = pw.CharField(max_length=200)
    secret_hash = pw.CharField(max_length=64)
    scopes = pw.TextField()  # space separated
    created_at = pw.DateTimeField(default=clock.now)
    revoked_at = pw.DateTimeField(null=True)


class IdempotencyRecord(BaseModel):
    client = pw.CharField(max_length=64)
    key = pw.CharField(max_length=200)
    operation = pw.CharField(max_length=100)
    request_digest = pw.CharField(max_length=64)
    status_code = pw.IntegerField()
    response = pw.TextField()
    created_at = pw.DateTimeField(default=clock.now)

    class Meta:
        indexes = ((("client", "key"), True),)


class AuditLog(BaseModel):
    at = pw.DateTimeField(default=clock.now, index=True)
    actor = pw.CharField(max_length=200)
    action = pw.CharField(max_length=100)
    subject = pw.CharField(max_length=200, null=True)
    detail = pw.TextField(null=True)  # JSON
