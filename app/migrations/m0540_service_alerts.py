"""Service desk: monitoring alert episodes (open -> recovered), one open episode per metric and scope.

Frozen DDL (see docs/architecture.md, Migrations): never edit, never import app.models."""
from app.migrations import ddl

_COLUMNS = ('"rule" VARCHAR(200) NOT NULL, "metric" VARCHAR(64) NOT NULL, "scope" VARCHAR(64) NOT NULL, '
            '"state" VARCHAR(16) NOT NULL, "threshold" {big} NOT NULL, "value" {big} NOT NULL, '
            '"peak" {big} NOT NULL, "last_value" {big} NOT NULL, "policy_version" VARCHAR(64) NOT NULL, '
            '"opened_at" {ts} NOT NULL, "evaluated_at" {ts} NOT NULL, "recovered_at" {ts}, '
            '"acknowledged_by" VARCHAR(64), "acknowledged_at" {ts}, "acknowledge_note" TEXT')
_INDEXES = [
    'CREATE INDEX IF NOT EXISTS "service_alert_state_opened_at" ON "service_alert" ("state", "opened_at")',
    'CREATE UNIQUE INDEX IF NOT EXISTS "service_alert_one_open" ON "service_alert" ("metric", "scope") '
    'WHERE "state" = \'open\'',
]

SQLITE = ['CREATE TABLE IF NOT EXISTS "service_alert" ("id" INTEGER NOT NULL PRIMARY KEY, '
          + _COLUMNS.format(ts="DATETIME", big="INTEGER") + ')'] + _INDEXES

POSTGRES = ['CREATE TABLE IF NOT EXISTS "service_alert" ("id" SERIAL NOT NULL PRIMARY KEY, '
            + _COLUMNS.format(ts="TIMESTAMP", big="BIGINT") + ')'] + _INDEXES


def upgrade(database):
    ddl(database, SQLITE, POSTGRES)
