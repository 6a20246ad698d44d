"""Outbox messages, webhooks, deliveries and their attempts.

Frozen DDL (see docs/architecture.md, Migrations): never edit, never import app.models."""
from app.migrations import ddl, sqlite_types

POSTGRES = [
    """CREATE TABLE IF NOT EXISTS "outbox_message" (
        "id" SERIAL NOT NULL PRIMARY KEY,
        "topic" VARCHAR(100) NOT NULL,
        "dedupe_key" VARCHAR(200),
        "subject" VARCHAR(200),
        "payload" TEXT NOT NULL,
        "created_at" TIMESTAMP NOT NULL)""",
    'CREATE INDEX IF NOT EXISTS "outbox_message_topic" ON "outbox_message" ("topic")',
    'CREATE UNIQUE INDEX IF NOT EXISTS "outbox_message_dedupe_key" ON "outbox_message" ("dedupe_key")',
    """CREATE TABLE IF NOT EXISTS "webhook" (
        "id" SERIAL NOT NULL PRIMARY KEY,
        "name" VARCHAR(200) NOT NULL,
        "url" VARCHAR(1000) NOT NULL,
        "secret" VARCHAR(200) NOT NULL,
        "topics" TEXT NOT NULL,
        "active" BOOLEAN NOT NULL,
        "created_at" TIMESTAMP NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS "outbox_delivery" (
        "id" SERIAL NOT NULL PRIMARY KEY,
        "message_id" INTEGER NOT NULL,
        "webhook_id" INTEGER NOT NULL,
        "status" VARCHAR(16) NOT NULL,
        "attempts" INTEGER NOT NULL,
        "next_attempt_at" TIMESTAMP NOT NULL,
        "last_status" INTEGER,
        "last_error" TEXT,
        "delivered_at" TIMESTAMP,
        "created_at" TIMESTAMP NOT NULL,
        FOREIGN KEY ("message_id") REFERENCES "outbox_message" ("id") ON DELETE CASCADE,
        FOREIGN KEY ("webhook_id") REFERENCES "webhook" ("id") ON DELETE CASCADE)""",
    'CREATE INDEX IF NOT EXISTS "outbox_delivery_message_id" ON "outbox_delivery" ("message_id")',
    'CREATE INDEX IF NOT EXISTS "outbox_delivery_webhook_id" ON "outbox_delivery" ("webhook_id")',
    'CREATE UNIQUE INDEX IF NOT EXISTS "outbox_delivery_message_id_webhook_id" ON "outbox_delivery" ("message_id", "webhook_id")',
    'CREATE INDEX IF NOT EXISTS "outbox_delivery_status_next_attempt_at" ON "outbox_delivery" ("status", "next_attempt_at")',
    """CREATE TABLE IF NOT EXISTS "outbox_attempt" (
        "id" SERIAL NOT NULL PRIMARY KEY,
        "delivery_id" INTEGER NOT NULL,
        "at" TIMESTAMP NOT NULL,
        "status_code" INTEGER,
        "error" TEXT,
        "duration_ms" INTEGER NOT NULL,
        FOREIGN KEY ("delivery_id") REFERENCES "outbox_delivery" ("id") ON DELETE CASCADE)""",
    'CREATE INDEX IF NOT EXISTS "outbox_attempt_delivery_id" ON "outbox_attempt" ("delivery_id")',
]
SQLITE = sqlite_types(POSTGRES)


def upgrade(db):
    ddl(db, SQLITE, POSTGRES)
