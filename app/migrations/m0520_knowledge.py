"""Knowledge base: entries, their versions (reviewed before publish), uses.

Frozen DDL (see docs/architecture.md, Migrations): never edit, never import app.models."""
from app.migrations import ddl, sqlite_types

POSTGRES = [
    'CREATE TABLE IF NOT EXISTS "knowledge_entry" ("id" SERIAL NOT NULL PRIMARY KEY, "title" VARCHAR(200) NOT NULL, "category" VARCHAR(64) NOT NULL, "tags" TEXT NOT NULL, "state" VARCHAR(16) NOT NULL, "version" INTEGER NOT NULL, "published_version" INTEGER, "usage_count" INTEGER NOT NULL, "created_by" VARCHAR(64) NOT NULL, "created_at" TIMESTAMP NOT NULL, "updated_at" TIMESTAMP NOT NULL)',
    'CREATE INDEX IF NOT EXISTS "knowledge_entry_category" ON "knowledge_entry" ("category")',
    'CREATE TABLE IF NOT EXISTS "knowledge_version" ("id" SERIAL NOT NULL PRIMARY KEY, "entry" BIGINT NOT NULL, "version" INTEGER NOT NULL, "title" VARCHAR(200) NOT NULL, "body" TEXT NOT NULL, "questions" TEXT NOT NULL, "category" VARCHAR(64) NOT NULL, "tags" TEXT NOT NULL, "state" VARCHAR(16) NOT NULL, "author" VARCHAR(64) NOT NULL, "note" TEXT NOT NULL, "restored_from" INTEGER, "reviewed_by" VARCHAR(64), "reviewed_at" TIMESTAMP, "review_note" TEXT, "created_at" TIMESTAMP NOT NULL)',
    'CREATE UNIQUE INDEX IF NOT EXISTS "knowledge_version_entry_version" ON "knowledge_version" ("entry", "version")',
    'CREATE TABLE IF NOT EXISTS "knowledge_use" ("id" SERIAL NOT NULL PRIMARY KEY, "entry" BIGINT NOT NULL, "version" INTEGER NOT NULL, "used_by" VARCHAR(64) NOT NULL, "conversation_id" BIGINT, "created_at" TIMESTAMP NOT NULL)',
    'CREATE INDEX IF NOT EXISTS "knowledge_use_entry" ON "knowledge_use" ("entry")',
]
SQLITE = sqlite_types(POSTGRES)


def upgrade(database):
    ddl(database, SQLITE, POSTGRES)
