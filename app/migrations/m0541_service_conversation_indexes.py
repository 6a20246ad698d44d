"""Service desk: conversations indexed by queue entry and close time (statistics, the floor's recent window) and
by group and ticket (the floor's SLA at risk).

Frozen DDL (see docs/architecture.md, Migrations): never edit, never import app.models."""
from app.migrations import ddl

STATEMENTS = [
    'CREATE INDEX IF NOT EXISTS "service_conversation_queued_at" ON "service_conversation" ("queued_at")',
    'CREATE INDEX IF NOT EXISTS "service_conversation_closed_at" ON "service_conversation" ("closed_at")',
    'CREATE INDEX IF NOT EXISTS "service_conversation_group_ticket_id" ON "service_conversation" ("group", "ticket_id")',
]
SQLITE = STATEMENTS
POSTGRES = STATEMENTS


def upgrade(database):
    ddl(database, SQLITE, POSTGRES)
