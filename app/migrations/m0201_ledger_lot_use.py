"""Ledger: lot uses of recorded lot spends (what each lot paid, what was refunded to it).

Frozen DDL (see docs/architecture.md, Migrations): never edit, never import app.models."""
from app.migrations import ddl

# peewee's column types per engine (a BigIntegerField is INTEGER on SQLite), so the drift check agrees
_COLS = ('"journal_id" INTEGER NOT NULL REFERENCES "ledger_journal" ("id"), '
         '"lot_id" INTEGER NOT NULL REFERENCES "ledger_lot" ("id"), "seq" INTEGER NOT NULL, '
         '"amount_minor" {big} NOT NULL, "refunded_minor" {big} NOT NULL)')
_INDEXES = [
    'CREATE INDEX IF NOT EXISTS "ledger_lot_use_journal_id" ON "ledger_lot_use" ("journal_id")',
    'CREATE UNIQUE INDEX IF NOT EXISTS "ledgerlotuse_journal_id_seq" ON "ledger_lot_use" ("journal_id", "seq")',
    'CREATE INDEX IF NOT EXISTS "ledgerlotuse_lot_id" ON "ledger_lot_use" ("lot_id")',
]
SQLITE = ['CREATE TABLE IF NOT EXISTS "ledger_lot_use" ("id" INTEGER NOT NULL PRIMARY KEY, '
          + _COLS.format(big="INTEGER")] + _INDEXES
POSTGRES = ['CREATE TABLE IF NOT EXISTS "ledger_lot_use" ("id" SERIAL NOT NULL PRIMARY KEY, '
            + _COLS.format(big="BIGINT")] + _INDEXES


def upgrade(db):
    ddl(db, SQLITE, POSTGRES)
