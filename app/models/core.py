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
    client = pw.CharField(max_length=80)  # api key id, or staff:<staff_no>
    key = pw.CharField(max_length=200)
    operation = pw.CharField(max_length=100)
    request_digest = pw.CharField(max_length=64)
    status_code = pw.IntegerField()
    response = pw.TextField()
    created_at = pw.DateTimeField(default=clock.now)

    class Meta:
        indexes = ((("client", "key"), True),)


class AuditLog(BaseModel):
    """One state change: who (actor text, staff member, credential), what, when, under which policy; append-only."""
    at = pw.DateTimeField(default=clock.now, index=True)
    actor = pw.CharField(max_length=200)  # e.g. staff:S-cs-1, api_key:ab12 as staff:S-cs-1, cli:alice
    action = pw.CharField(max_length=100, index=True)
    subject = pw.CharField(max_length=200, null=True, index=True)
    detail = pw.TextField(null=True)  # JSON
    request_id = pw.CharField(max_length=128, null=True, index=True)
    staff_no = pw.CharField(max_length=64, null=True, index=True)  # the person, when one acted
    credential = pw.CharField(max_length=100, null=True)  # api_key:<id> or session:<token id>
    policy_version = pw.CharField(max_length=64, null=True)
    before = pw.TextField(null=True)  # JSON summary
    after = pw.TextField(null=True)  # JSON summary
