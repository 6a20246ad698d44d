"""Service desk: the sweep finds due timeouts with indexed queries over the live rows only.

Frozen DDL (see docs/architecture.md, Migrations): never edit, never import app.models."""
from app.migrations import ddl

_INDEXES = [
    'CREATE INDEX IF NOT EXISTS "service_agent_live_heartbeat_at" ON "service_agent" ("heartbeat_at") WHERE "status" <> \'offline\'',
    'CREATE INDEX IF NOT EXISTS "service_agent_live_left_at" ON "service_agent" ("left_at") WHERE "status" <> \'offline\'',
    'CREATE INDEX IF NOT EXISTS "service_conversation_open_user_seen_at" ON "service_conversation" ("user_seen_at") WHERE "state" <> \'closed\'',
    'CREATE INDEX IF NOT EXISTS "service_conversation_open_user_left_at" ON "service_conversation" ("user_left_at") WHERE "state" <> \'closed\'',
]

SQLITE = list(_INDEXES)
POSTGRES = list(_INDEXES)


def upgrade(database):
    ddl(database, SQLITE, POSTGRES)
