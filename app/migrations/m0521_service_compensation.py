"""Service desk: compensation (红包赔付) agents pay users, within policy limits or after approval.

Frozen DDL (see docs/architecture.md, Migrations): never edit, never import app.models."""
from app.migrations import ddl, sqlite_types

POSTGRES = [
    'CREATE TABLE IF NOT EXISTS "service_compensation" ("id" SERIAL NOT NULL PRIMARY KEY, "user_id" VARCHAR(200) NOT NULL, "staff_no" VARCHAR(64) NOT NULL, "amount_fen" BIGINT NOT NULL, "reason" VARCHAR(64) NOT NULL, "note" TEXT NOT NULL, "conversation_id" BIGINT, "ticket_id" BIGINT, "state" VARCHAR(16) NOT NULL, "business_date" VARCHAR(10) NOT NULL, "policy_version" VARCHAR(64) NOT NULL, "rule" VARCHAR(200) NOT NULL, "journal_id" BIGINT, "decided_by" VARCHAR(64), "decided_at" TIMESTAMP, "created_at" TIMESTAMP NOT NULL)',
    'CREATE INDEX IF NOT EXISTS "service_compensation_user_id" ON "service_compensation" ("user_id")',
    'CREATE INDEX IF NOT EXISTS "service_compensation_staff_no_business_date" ON "service_compensation" ("staff_no", "business_date")',
    'CREATE INDEX IF NOT EXISTS "service_compensation_business_date_state" ON "service_compensation" ("business_date", "state")',
]
SQLITE = sqlite_types(POSTGRES)


def upgrade(database):
    ddl(database, SQLITE, POSTGRES)
