"""Service operations: the agents' presence log (append-only), rosters and shift exceptions, QA reviews.

Frozen DDL (see docs/architecture.md, Migrations): never edit, never import app.models."""
from app.migrations import ddl, sqlite_types

POSTGRES = [
    'CREATE TABLE IF NOT EXISTS "service_presence" ("id" SERIAL NOT NULL PRIMARY KEY, "staff_no" VARCHAR(64) NOT NULL, "status" VARCHAR(16) NOT NULL, "reason" VARCHAR(32) NOT NULL, "at" TIMESTAMP NOT NULL, "created_at" TIMESTAMP NOT NULL)',
    'CREATE INDEX IF NOT EXISTS "service_presence_staff_no_at" ON "service_presence" ("staff_no", "at")',
    'CREATE TABLE IF NOT EXISTS "service_roster" ("id" SERIAL NOT NULL PRIMARY KEY, "staff_no" VARCHAR(64) NOT NULL, "group" VARCHAR(64) NOT NULL, "week" TEXT NOT NULL, "valid_from" VARCHAR(10) NOT NULL, "valid_to" VARCHAR(10), "updated_by" VARCHAR(100) NOT NULL, "updated_at" TIMESTAMP NOT NULL)',
    'CREATE UNIQUE INDEX IF NOT EXISTS "service_roster_staff_no_group" ON "service_roster" ("staff_no", "group")',
    'CREATE TABLE IF NOT EXISTS "service_shift_exception" ("id" SERIAL NOT NULL PRIMARY KEY, "staff_no" VARCHAR(64) NOT NULL, "day" VARCHAR(10) NOT NULL, "kind" VARCHAR(8) NOT NULL, "group" VARCHAR(64), "start_minute" INTEGER, "end_minute" INTEGER, "note" TEXT NOT NULL, "created_by" VARCHAR(100) NOT NULL, "created_at" TIMESTAMP NOT NULL)',
    'CREATE INDEX IF NOT EXISTS "service_shift_exception_staff_no" ON "service_shift_exception" ("staff_no")',
    'CREATE INDEX IF NOT EXISTS "service_shift_exception_day_staff_no" ON "service_shift_exception" ("day", "staff_no")',
    'CREATE TABLE IF NOT EXISTS "service_qa_review" ("id" SERIAL NOT NULL PRIMARY KEY, "subject_kind" VARCHAR(16) NOT NULL, "subject_id" BIGINT NOT NULL, "agent" VARCHAR(64) NOT NULL, "group" VARCHAR(64), "channel" VARCHAR(16), "period" VARCHAR(10) NOT NULL, "source" VARCHAR(16) NOT NULL, "stratum" VARCHAR(64), "inspector" VARCHAR(64), "state" VARCHAR(16) NOT NULL, "score" INTEGER, "items" TEXT NOT NULL, "fatal" TEXT NOT NULL, "comment" TEXT NOT NULL, "scored_at" TIMESTAMP, "appeal_reason" TEXT, "appealed_at" TIMESTAMP, "acknowledged_at" TIMESTAMP, "resolution" VARCHAR(16), "resolved_by" VARCHAR(64), "resolved_at" TIMESTAMP, "resolution_note" TEXT, "policy_version" VARCHAR(64) NOT NULL, "rule" VARCHAR(200) NOT NULL, "created_at" TIMESTAMP NOT NULL, "updated_at" TIMESTAMP NOT NULL)',
    'CREATE INDEX IF NOT EXISTS "service_qa_review_agent" ON "service_qa_review" ("agent")',
    'CREATE INDEX IF NOT EXISTS "service_qa_review_inspector" ON "service_qa_review" ("inspector")',
    'CREATE UNIQUE INDEX IF NOT EXISTS "service_qa_review_subject_kind_subject_id" ON "service_qa_review" ("subject_kind", "subject_id")',
    'CREATE INDEX IF NOT EXISTS "service_qa_review_period_agent" ON "service_qa_review" ("period", "agent")',
    'CREATE INDEX IF NOT EXISTS "service_qa_review_state_inspector" ON "service_qa_review" ("state", "inspector")',
]
SQLITE = sqlite_types(POSTGRES)


def upgrade(database):
    ddl(database, SQLITE, POSTGRES)
