"""API keys, idempotency records, audit log.

Frozen DDL (see docs/architecture.md, Migrations): never edit, never import app.models."""
from app.migrations import ddl, sqlite_types

POSTGRES = [
    """CREATE TABLE IF NOT EXISTS "api_key" (
        "id" SERIAL NOT NULL PRIMARY KEY,
        "key_id" VARCHAR(32) NOT NULL,
        "name" VARCHAR(200) NOT NULL,
        "secret_hash" VARCHAR(64) NOT NULL,
        "scopes" TEXT NOT NULL,
        "created_at" TIMESTAMP NOT NULL,
        "revoked_at" TIMESTAMP)""",
    'CREATE UNIQUE INDEX IF NOT EXISTS "api_key_key_id" ON "api_key" ("key_id")',
    """CREATE TABLE IF NOT EXISTS "audit_log" (
        "id" SERIAL NOT NULL PRIMARY KEY,
        "at" TIMESTAMP NOT NULL,
        "actor" VARCHAR(200) NOT NULL,
        "action" VARCHAR(100) NOT NULL,
        "subject" VARCHAR(200),
        "detail" TEXT)""",
    'CREATE INDEX IF NOT EXISTS "audit_log_at" ON "audit_log" ("at")',
    """CREATE TABLE IF NOT EXISTS "idempotency_record" (
        "id" SERIAL NOT NULL PRIMARY KEY,
        "client" VARCHAR(64) NOT NULL,
        "key" VARCHAR(200) NOT NULL,
        "operation" VARCHAR(100) NOT NULL,
        "request_digest" VARCHAR(64) NOT NULL,
        "status_code" INTEGER NOT NULL,
        "response" TEXT NOT NULL,
        "created_at" TIMESTAMP NOT NULL)""",
    'CREATE UNIQUE INDEX IF NOT EXISTS "idempotency_record_client_key" ON "idempotency_record" ("client", "key")',
]
SQLITE = sqlite_types(POSTGRES)


def upgrade(db):
    ddl(db, SQLITE, POSTGRES)
