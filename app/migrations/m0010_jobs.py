"""job_run: exactly-once record of job ids and periodic ticks.

Frozen DDL (see docs/architecture.md, Migrations): never edit, never import app.models."""
from app.migrations import ddl, sqlite_types

POSTGRES = [
    """CREATE TABLE IF NOT EXISTS "job_run" (
        "id" SERIAL NOT NULL PRIMARY KEY,
        "job" VARCHAR(200) NOT NULL,
        "run_key" VARCHAR(200) NOT NULL,
        "scheduled_for" TIMESTAMP,
        "runner" VARCHAR(16) NOT NULL,
        "status" VARCHAR(16) NOT NULL,
        "attempts" INTEGER NOT NULL,
        "token" VARCHAR(32) NOT NULL,
        "started_at" TIMESTAMP NOT NULL,
        "finished_at" TIMESTAMP,
        "error" TEXT)""",
    'CREATE UNIQUE INDEX IF NOT EXISTS "job_run_job_run_key" ON "job_run" ("job", "run_key")',
    'CREATE INDEX IF NOT EXISTS "job_run_job_started_at" ON "job_run" ("job", "started_at")',
]
SQLITE = sqlite_types(POSTGRES)


def upgrade(db):
    ddl(db, SQLITE, POSTGRES)
