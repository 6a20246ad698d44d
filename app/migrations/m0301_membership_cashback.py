"""Membership: cashback awards (cashback benefit credited per order through the ledger).

Frozen DDL (see docs/architecture.md, Migrations): never edit, never import app.models."""
from app.migrations import ddl, sqlite_types

POSTGRES = [
    """CREATE TABLE IF NOT EXISTS "cashback_award" (
        "id" SERIAL NOT NULL PRIMARY KEY,
        "member_ref" VARCHAR(100) NOT NULL,
        "entry_key" VARCHAR(200) NOT NULL,
        "kind" VARCHAR(20) NOT NULL,
        "amount_fen" BIGINT NOT NULL,
        "cut" BIGINT NOT NULL,
        "event_id" VARCHAR(100) NOT NULL,
        "order_ref" VARCHAR(100) NOT NULL,
        "rule" VARCHAR(200) NOT NULL,
        "policy_version" VARCHAR(64) NOT NULL,
        "reason" TEXT NOT NULL,
        "journal" VARCHAR(100),
        "at" TIMESTAMP NOT NULL,
        "created_at" TIMESTAMP NOT NULL)""",
    'CREATE INDEX IF NOT EXISTS "cashback_award_member_ref" ON "cashback_award" ("member_ref")',
    'CREATE UNIQUE INDEX IF NOT EXISTS "cashback_award_entry_key" ON "cashback_award" ("entry_key")',
    'CREATE INDEX IF NOT EXISTS "cashback_award_event_id" ON "cashback_award" ("event_id")',
    'CREATE INDEX IF NOT EXISTS "cashback_award_order_ref" ON "cashback_award" ("order_ref")',
    'CREATE INDEX IF NOT EXISTS "cashback_award_at" ON "cashback_award" ("at")',
]
SQLITE = sqlite_types(POSTGRES)


def upgrade(db):
    ddl(db, SQLITE, POSTGRES)
