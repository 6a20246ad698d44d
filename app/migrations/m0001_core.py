"""API keys, idempotency records, audit log.

Frozen DDL (see docs/architecture.md, Migrations): never edit, never import app.models."""
from app.migrations import ddl

SQLITE = [
    """CREATE TABLE IF NOT EXISTS "api_key" (
        "id" INTEGER NOT NULL PRIMARY KEY,
        "key_id" VARCHAR(32) NOT NULL,
        "name" VARCHAR(200) NOT NULL,
        "secret_hash" VARCHAR(64) NOT NULL,
        "scopes" TEXT NOT NULL,
        "created_at" DATETIME NOT NULL,
        "revoked_at" DATETIME)""",
    'CREATE UNIQUE INDEX IF NOT EXISTS "api_key_key_id" ON "api_key" ("key_id")',
    """CREATE TABLE IF NOT EXISTS "audit_log" (
        "id" INTEGER NOT NULL PRIMARY KEY,
        "at" DATETIME NOT NULL,
        "actor" VARCHAR(200) NOT NULL,
        "action" VARCHAR(100) NOT NULL,
        "subject" VARCHAR(200),
        "detail" TEXT)""",
    'CREATE INDEX IF NOT EXISTS "audit_log_at" ON "audit_log" ("at")',
    """CREATE TABLE IF NOT EXISTS "idempotency_record" (
        "id" INTEGER NOT NULL PRIMARY KEY,
        "client" VARCHAR(64) NOT NULL,
        "key" VARCHAR(200) NOT NULL,
        "operation" VARCHAR(100) NOT NULL,
        "request_digest" VARCHAR(64) NOT NULL,
        "status_code" INTEGER NOT NULL,
        "response" TEXT NOT NULL,
        "created_at" DATETIME NOT NULL)""",
    'CREATE UNIQUE INDEX IF NOT EXISTS "idempotency_record_client_key" ON "idempotency_record" ("client", "key")',
]

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


def upgrade(db):
    ddl(db, SQLITE, POSTGRES)
