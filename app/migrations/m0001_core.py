"""API keys, idempotency records, audit log."""
from app.models.core import ApiKey, AuditLog, IdempotencyRecord


def upgrade(db):
    db.create_tables([ApiKey, IdempotencyRecord, AuditLog])
