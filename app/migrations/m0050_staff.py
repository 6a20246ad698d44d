"""Departments and staff.

Frozen DDL (see docs/architecture.md, Migrations): never edit, never import app.models."""
from app.migrations import ddl, sqlite_types

POSTGRES = [
    """CREATE TABLE IF NOT EXISTS "department" (
        "id" SERIAL NOT NULL PRIMARY KEY,
        "code" VARCHAR(64) NOT NULL,
        "name" VARCHAR(200) NOT NULL,
        "queues" TEXT NOT NULL,
        "active" BOOLEAN NOT NULL,
        "updated_at" TIMESTAMP NOT NULL)""",
    'CREATE UNIQUE INDEX IF NOT EXISTS "department_code" ON "department" ("code")',
    """CREATE TABLE IF NOT EXISTS "staff" (
        "id" SERIAL NOT NULL PRIMARY KEY,
        "staff_no" VARCHAR(64) NOT NULL,
        "name" VARCHAR(200) NOT NULL,
        "department" VARCHAR(64) NOT NULL,
        "roles" TEXT NOT NULL,
        "active" BOOLEAN NOT NULL,
        "created_at" TIMESTAMP NOT NULL)""",
    'CREATE UNIQUE INDEX IF NOT EXISTS "staff_staff_no" ON "staff" ("staff_no")',
    'CREATE INDEX IF NOT EXISTS "staff_department" ON "staff" ("department")',
]
SQLITE = sqlite_types(POSTGRES)


def upgrade(db):
    ddl(db, SQLITE, POSTGRES)
