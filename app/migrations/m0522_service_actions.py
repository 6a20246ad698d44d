"""Service desk: actions agents take in the shop for a user (invoice, return/exchange, cancel), exactly once.

Frozen DDL (see docs/architecture.md, Migrations): never edit, never import app.models."""
from app.migrations import ddl, sqlite_types

POSTGRES = [
    'CREATE TABLE IF NOT EXISTS "service_action" ("id" SERIAL NOT NULL PRIMARY KEY, "key" VARCHAR(300) NOT NULL, "request_digest" VARCHAR(64) NOT NULL, "kind" VARCHAR(16) NOT NULL, "order_no" VARCHAR(200) NOT NULL, "user_id" VARCHAR(200), "staff_no" VARCHAR(64) NOT NULL, "conversation_id" BIGINT, "ticket_id" BIGINT, "params" TEXT NOT NULL, "state" VARCHAR(16) NOT NULL, "attempts" INTEGER NOT NULL, "response" TEXT, "error" TEXT, "policy_version" VARCHAR(64) NOT NULL, "rule" VARCHAR(200) NOT NULL, "created_at" TIMESTAMP NOT NULL, "updated_at" TIMESTAMP NOT NULL)',
    'CREATE UNIQUE INDEX IF NOT EXISTS "service_action_key" ON "service_action" ("key")',
    'CREATE INDEX IF NOT EXISTS "service_action_order_no" ON "service_action" ("order_no")',
]
SQLITE = sqlite_types(POSTGRES)


def upgrade(database):
    ddl(database, SQLITE, POSTGRES)
