"""Policy sets, the active pointer (one row), activation history, decision log.

Frozen DDL (see docs/architecture.md, Migrations): never edit, never import app.models."""
from app.migrations import ddl, sqlite_types

POSTGRES = [
    """CREATE TABLE IF NOT EXISTS "decision" (
        "id" SERIAL NOT NULL PRIMARY KEY,
        "decision_id" VARCHAR(40) NOT NULL,
        "ruleset" VARCHAR(100) NOT NULL,
        "version" VARCHAR(40),
        "rule" VARCHAR(200),
        "subject" VARCHAR(200) NOT NULL,
        "input_digest" VARCHAR(64) NOT NULL,
        "inputs" TEXT NOT NULL,
        "outcome" TEXT NOT NULL,
        "created_at" TIMESTAMP NOT NULL)""",
    'CREATE UNIQUE INDEX IF NOT EXISTS "decision_decision_id" ON "decision" ("decision_id")',
    'CREATE INDEX IF NOT EXISTS "decision_ruleset" ON "decision" ("ruleset")',
    'CREATE INDEX IF NOT EXISTS "decision_subject" ON "decision" ("subject")',
    'CREATE INDEX IF NOT EXISTS "decision_created_at" ON "decision" ("created_at")',
    """CREATE TABLE IF NOT EXISTS "policy_activation" (
        "id" SERIAL NOT NULL PRIMARY KEY,
        "seq" BIGINT NOT NULL,
        "version" VARCHAR(16) NOT NULL,
        "previous_version" VARCHAR(16),
        "activated_by" VARCHAR(200) NOT NULL,
        "activated_at" TIMESTAMP NOT NULL,
        "note" TEXT)""",
    'CREATE UNIQUE INDEX IF NOT EXISTS "policy_activation_seq" ON "policy_activation" ("seq")',
    'CREATE INDEX IF NOT EXISTS "policy_activation_version" ON "policy_activation" ("version")',
    """CREATE TABLE IF NOT EXISTS "policy_active" (
        "id" INTEGER NOT NULL PRIMARY KEY,
        "version" VARCHAR(16),
        "seq" BIGINT NOT NULL,
        "activated_by" VARCHAR(200),
        "activated_at" TIMESTAMP)""",
    """CREATE TABLE IF NOT EXISTS "policy_version" (
        "version" VARCHAR(16) NOT NULL PRIMARY KEY,
        "files" TEXT NOT NULL,
        "file_count" INTEGER NOT NULL,
        "created_by" VARCHAR(200) NOT NULL,
        "created_at" TIMESTAMP NOT NULL)""",
    'INSERT INTO "policy_active" ("id", "version", "seq") VALUES (1, NULL, 0)',
]
SQLITE = sqlite_types(POSTGRES)


def upgrade(db):
    ddl(db, SQLITE, POSTGRES)
