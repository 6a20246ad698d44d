"""Ticket approvals record the credential that proved the approver's identity (distinct approvers per credential).

Frozen DDL (see docs/architecture.md, Migrations): never edit, never import app.models."""
from app.migrations import ddl

SQLITE = ['ALTER TABLE "ticket_approval" ADD COLUMN "credential" VARCHAR(100)']
POSTGRES = SQLITE


def upgrade(db):
    ddl(db, SQLITE, POSTGRES)
