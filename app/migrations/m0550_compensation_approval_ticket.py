"""A compensation above the payer's limit is approved on a ticket: the compensation names that ticket.

Frozen DDL (see docs/architecture.md, Migrations): never edit, never import app.models."""
from app.migrations import ddl, sqlite_types

POSTGRES = ['ALTER TABLE "service_compensation" ADD COLUMN "approval_ticket_id" BIGINT',
            'CREATE UNIQUE INDEX IF NOT EXISTS "service_compensation_approval_ticket_id" '
            'ON "service_compensation" ("approval_ticket_id")']
SQLITE = sqlite_types(POSTGRES)


def upgrade(db):
    ddl(db, SQLITE, POSTGRES)
