"""Customer service: groups, agents (presence and lock), conversations, events, complaints, calls, reviews, nodes.

Frozen DDL (see docs/architecture.md, Migrations): never edit, never import app.models."""
from app.migrations import ddl, sqlite_types

POSTGRES = [
    'CREATE TABLE IF NOT EXISTS "service_group" ("id" SERIAL NOT NULL PRIMARY KEY, "code" VARCHAR(64) NOT NULL, "updated_at" TIMESTAMP NOT NULL)',
    'CREATE UNIQUE INDEX IF NOT EXISTS "service_group_code" ON "service_group" ("code")',
    'CREATE TABLE IF NOT EXISTS "service_agent" ("id" SERIAL NOT NULL PRIMARY KEY, "staff_no" VARCHAR(64) NOT NULL, "status" VARCHAR(16) NOT NULL, "groups" TEXT NOT NULL, "capacity" INTEGER NOT NULL, "serving" INTEGER NOT NULL, "heartbeat_at" TIMESTAMP, "left_at" TIMESTAMP, "last_assigned_at" TIMESTAMP, "updated_at" TIMESTAMP NOT NULL)',
    'CREATE UNIQUE INDEX IF NOT EXISTS "service_agent_staff_no" ON "service_agent" ("staff_no")',
    'CREATE INDEX IF NOT EXISTS "service_agent_status_serving" ON "service_agent" ("status", "serving")',
    'CREATE TABLE IF NOT EXISTS "service_conversation" ("id" SERIAL NOT NULL PRIMARY KEY, "user_id" VARCHAR(200) NOT NULL, "group" VARCHAR(64) NOT NULL, "channel" VARCHAR(16) NOT NULL, "state" VARCHAR(16) NOT NULL, "priority" INTEGER NOT NULL, "priority_rule" VARCHAR(200), "policy_version" VARCHAR(64) NOT NULL, "facts" TEXT NOT NULL, "topic" TEXT NOT NULL, "queued_at" TIMESTAMP, "agent" VARCHAR(64), "assigned_at" TIMESTAMP, "user_seen_at" TIMESTAMP NOT NULL, "user_left_at" TIMESTAMP, "token_hash" VARCHAR(64) NOT NULL, "last_seq" INTEGER NOT NULL, "requeues" INTEGER NOT NULL, "closed_at" TIMESTAMP, "close_reason" VARCHAR(32), "close_category" VARCHAR(64), "close_summary" TEXT, "closed_by" VARCHAR(100), "complaint_id" BIGINT, "ticket_id" BIGINT, "csat_score" INTEGER, "csat_comment" TEXT, "csat_at" TIMESTAMP, "created_at" TIMESTAMP NOT NULL)',
    'CREATE INDEX IF NOT EXISTS "service_conversation_user_id" ON "service_conversation" ("user_id")',
    'CREATE INDEX IF NOT EXISTS "service_conversation_agent" ON "service_conversation" ("agent")',
    'CREATE INDEX IF NOT EXISTS "service_conversation_state_group_priority_queued_at" ON "service_conversation" ("state", "group", "priority", "queued_at")',
    'CREATE TABLE IF NOT EXISTS "service_event" ("id" SERIAL NOT NULL PRIMARY KEY, "conversation" BIGINT NOT NULL, "seq" INTEGER NOT NULL, "kind" VARCHAR(32) NOT NULL, "sender" VARCHAR(16) NOT NULL, "audience" VARCHAR(8) NOT NULL, "staff_no" VARCHAR(64), "body" TEXT NOT NULL, "created_at" TIMESTAMP NOT NULL)',
    'CREATE INDEX IF NOT EXISTS "service_event_staff_no" ON "service_event" ("staff_no")',
    'CREATE UNIQUE INDEX IF NOT EXISTS "service_event_conversation_seq" ON "service_event" ("conversation", "seq")',
    'CREATE TABLE IF NOT EXISTS "service_complaint" ("id" SERIAL NOT NULL PRIMARY KEY, "user_id" VARCHAR(200) NOT NULL, "source" VARCHAR(16) NOT NULL, "category" VARCHAR(64) NOT NULL, "summary" TEXT NOT NULL, "conversation_id" BIGINT, "ticket_id" BIGINT NOT NULL, "policy_version" VARCHAR(64), "rule" VARCHAR(200), "created_by" VARCHAR(100) NOT NULL, "created_at" TIMESTAMP NOT NULL, "updated_at" TIMESTAMP NOT NULL)',
    'CREATE INDEX IF NOT EXISTS "service_complaint_user_id" ON "service_complaint" ("user_id")',
    'CREATE UNIQUE INDEX IF NOT EXISTS "service_complaint_ticket_id" ON "service_complaint" ("ticket_id")',
    'CREATE TABLE IF NOT EXISTS "service_call" ("id" SERIAL NOT NULL PRIMARY KEY, "external_ref" VARCHAR(200) NOT NULL, "user_id" VARCHAR(200) NOT NULL, "staff_no" VARCHAR(64), "direction" VARCHAR(8) NOT NULL, "started_at" TIMESTAMP NOT NULL, "duration_seconds" INTEGER NOT NULL, "recording_ref" VARCHAR(1000), "summary" TEXT NOT NULL, "complaint_id" BIGINT, "created_by" VARCHAR(100) NOT NULL, "created_at" TIMESTAMP NOT NULL)',
    'CREATE UNIQUE INDEX IF NOT EXISTS "service_call_external_ref" ON "service_call" ("external_ref")',
    'CREATE INDEX IF NOT EXISTS "service_call_user_id" ON "service_call" ("user_id")',
    'CREATE TABLE IF NOT EXISTS "service_review" ("id" SERIAL NOT NULL PRIMARY KEY, "external_ref" VARCHAR(200) NOT NULL, "source" VARCHAR(32) NOT NULL, "user_id" VARCHAR(200) NOT NULL, "rating" INTEGER NOT NULL, "text" TEXT NOT NULL, "order_no" VARCHAR(200), "complaint_id" BIGINT, "rule" VARCHAR(200), "policy_version" VARCHAR(64) NOT NULL, "created_at" TIMESTAMP NOT NULL)',
    'CREATE UNIQUE INDEX IF NOT EXISTS "service_review_external_ref" ON "service_review" ("external_ref")',
    'CREATE INDEX IF NOT EXISTS "service_review_user_id" ON "service_review" ("user_id")',
    'CREATE TABLE IF NOT EXISTS "service_node" ("id" SERIAL NOT NULL PRIMARY KEY, "node_id" VARCHAR(200) NOT NULL, "mode" VARCHAR(16) NOT NULL, "seen_at" TIMESTAMP NOT NULL)',
    'CREATE UNIQUE INDEX IF NOT EXISTS "service_node_node_id" ON "service_node" ("node_id")',
    'CREATE UNIQUE INDEX IF NOT EXISTS "service_conversation_one_open" ON "service_conversation" ("user_id") WHERE "state" <> \'closed\'',
]
SQLITE = sqlite_types(POSTGRES)


def upgrade(db):
    # the partial unique index keeps one open conversation per user, whichever process asks
    ddl(db, SQLITE, POSTGRES)
