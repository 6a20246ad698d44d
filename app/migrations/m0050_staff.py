"""Departments and staff.

Frozen DDL (see docs/architecture.md, Migrations): never edit, never import app.models."""
from app.migrations import ddl

SQLITE = [
    """CREATE TABLE IF NOT EXISTS "department" (
        "id" INTEGER NOT NULL PRIMARY KEY,
        "code" VARCHAR(64) NOT NULL,
        "name" VARCHAR(200) NOT NULL,
        "queues" TEXT NOT NULL,
        "active" INTEGER NOT NULL,
        "updated_at" DATETIME NOT NULL)""",
    'CREATE UNIQUE INDEX IF NOT EXISTS "department_code" ON "department" ("code")',
    """CREATE TABLE IF NOT EXISTS "staff" (
        "id" INTEGER NOT NULL PRIMARY KEY,
        "staff_no" VARCHAR(64) NOT NULL,
        "name" VARCHAR(200) NOT NULL,
        "department" VARCHAR(64) NOT NULL,
        "roles" TEXT NOT NULL,
        "active" INTEGER NOT NULL,
        "created_at" DATETIME NOT NULL)""",
    'CREATE UNIQUE INDEX IF NOT EXISTS "staff_staff_no" ON "staff" ("staff_no")',
    'CREATE INDEX IF NOT EXISTS "staff_department" ON "staff" ("department")',
]

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


def upgrade(db):
    ddl(db, SQLITE, POSTGRES)
