"""Policy storage: stored policy sets (files + hash), the active pointer, activation history, decision log."""
import peewee as pw

from app.platform import clock
from app.db import BaseModel



class PolicyVersion(BaseModel):
    version = pw.CharField(max_length=16, primary_key=True)  # content hash of all files
    files = pw.TextField()  # JSON {relative path: text}
    file_count = pw.IntegerField()
    created_by = pw.CharField(max_length=200)
    created_at = pw.DateTimeField(default=clock.now)


class PolicyActive(BaseModel):
    """Exactly one row (id 1): the version in force; ``seq`` grows with every activation."""
    id = pw.IntegerField(primary_key=True)
    version = pw.CharField(max_length=16, null=True)
    seq = pw.BigIntegerField(default=0)
    activated_by = pw.CharField(max_length=200, null=True)
    activated_at = pw.DateTimeField(null=True)


class PolicyActivation(BaseModel):
    seq = pw.BigIntegerField(unique=True)
    version = pw.CharField(max_length=16, index=True)
    previous_version = pw.CharField(max_length=16, null=True)
    activated_by = pw.CharField(max_length=200)
    activated_at = pw.DateTimeField(default=clock.now)
    note = pw.TextField(null=True)


class Decision(BaseModel):
    decision_id = pw.CharField(max_length=40, unique=True)
    ruleset = pw.CharField(max_length=100, index=True)
    version = pw.CharField(max_length=40, null=True)
    rule = pw.CharField(max_length=200, null=True)
    subject = pw.CharField(max_length=200, index=True)
    input_digest = pw.CharField(max_length=64)
    inputs = pw.TextField()  # JSON
    outcome = pw.TextField()  # JSON
    created_at = pw.DateTimeField(default=clock.now, index=True)
