"""Audit log of privileged actions."""
import json

from app.models.core import AuditLog


def record(actor, action, subject=None, **detail):
    """Append one audit row (call inside the transaction of the action it describes)."""
    AuditLog.create(actor=actor, action=action, subject=subject,
                    detail=json.dumps(detail, ensure_ascii=False, default=str) if detail else None)
