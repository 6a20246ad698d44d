"""Service desk: monitoring alert episodes (open -> recovered), one open episode per metric and scope.

Frozen DDL (see docs/architecture.md, Migrations): never edit, never import app.models."""
from app.migrations import ddl, sqlite_types

POSTGRES = [
    'CREATE TABLE IF NOT EXISTS "service_alert" ("id" SERIAL NOT NULL PRIMARY KEY, '
    '"rule" VARCHAR(200) NOT NULL, "metric" VARCHAR(64) NOT NULL, "scope" VARCHAR(64) NOT NULL, '
    '"state" VARCHAR(16) NOT NULL, "threshold" BIGINT NOT NULL, "value" BIGINT NOT NULL, '
    '"peak" BIGINT NOT NULL, "last_value" BIGINT NOT NULL, "policy_version" VARCHAR(64) NOT NULL, '
    '"opened_at" TIMESTAMP NOT NULL, "evaluated_at" TIMESTAMP NOT NULL, "recovered_at" TIMESTAMP, '
    '"acknowledged_by" VARCHAR(64), "acknowledged_at" TIMESTAMP, "acknowledge_note" TEXT)',
    'CREATE INDEX IF NOT EXISTS "service_alert_state_opened_at" ON "service_alert" ("state", "opened_at")',
    'CREATE UNIQUE INDEX IF NOT EXISTS "service_alert_one_open" ON "service_alert" ("metric", "scope") '
    'WHERE "state" = \'open\'',
]
SQLITE = sqlite_types(POSTGRES)


def upgrade(database):
    ddl(database, SQLITE, POSTGRES)
