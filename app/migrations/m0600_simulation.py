"""Simulation: API runs, shadow sets and their differences.

Frozen DDL (see docs/architecture.md, Migrations): never edit, never import app.models."""
from app.migrations import ddl, sqlite_types

POSTGRES = [
    """CREATE TABLE IF NOT EXISTS "simulation_run" ("id" SERIAL NOT NULL PRIMARY KEY, "run_id" VARCHAR(40) NOT NULL, "status" VARCHAR(16) NOT NULL, "spec" TEXT NOT NULL, "done" BIGINT NOT NULL, "total" BIGINT NOT NULL, "report" TEXT, "error" TEXT, "created_by" VARCHAR(200) NOT NULL, "created_at" TIMESTAMP NOT NULL, "started_at" TIMESTAMP, "finished_at" TIMESTAMP)""",
    'CREATE UNIQUE INDEX IF NOT EXISTS "simulation_run_run_id" ON "simulation_run" ("run_id")',
    """CREATE TABLE IF NOT EXISTS "shadow_set" ("id" SERIAL NOT NULL PRIMARY KEY, "version" VARCHAR(64) NOT NULL, "files" TEXT NOT NULL, "status" VARCHAR(16) NOT NULL, "started_by" VARCHAR(200) NOT NULL, "started_at" TIMESTAMP NOT NULL, "stopped_at" TIMESTAMP)""",
    'CREATE INDEX IF NOT EXISTS "shadow_set_status" ON "shadow_set" ("status")',
    """CREATE TABLE IF NOT EXISTS "shadow_diff" ("id" SERIAL NOT NULL PRIMARY KEY, "shadow_id" INTEGER NOT NULL, "event_id" VARCHAR(100) NOT NULL, "member_ref" VARCHAR(100) NOT NULL, "kind" VARCHAR(16) NOT NULL, "rule" VARCHAR(200) NOT NULL, "active_amount" BIGINT NOT NULL, "candidate_amount" BIGINT NOT NULL, "detail" TEXT, "at" TIMESTAMP NOT NULL, FOREIGN KEY ("shadow_id") REFERENCES "shadow_set" ("id"))""",
    'CREATE INDEX IF NOT EXISTS "shadow_diff_shadow_id" ON "shadow_diff" ("shadow_id")',
    'CREATE UNIQUE INDEX IF NOT EXISTS "shadow_diff_shadow_id_event_id_kind_rule" ON "shadow_diff" ("shadow_id", "event_id", "kind", "rule")',
]
SQLITE = sqlite_types(POSTGRES)


def upgrade(db):
    ddl(db, SQLITE, POSTGRES)
