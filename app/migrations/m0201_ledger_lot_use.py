"""Ledger: lot uses of recorded lot spends (what each lot paid, what was refunded to it).

Frozen DDL (see docs/architecture.md, Migrations): never edit, never import app.models."""
from app.migrations import ddl, sqlite_types

POSTGRES = [
    'CREATE TABLE IF NOT EXISTS "ledger_lot_use" ("id" SERIAL NOT NULL PRIMARY KEY, '
    '"journal_id" INTEGER NOT NULL REFERENCES "ledger_journal" ("id"), '
    '"lot_id" INTEGER NOT NULL REFERENCES "ledger_lot" ("id"), "seq" INTEGER NOT NULL, '
    '"amount_minor" BIGINT NOT NULL, "refunded_minor" BIGINT NOT NULL)',
    'CREATE INDEX IF NOT EXISTS "ledger_lot_use_journal_id" ON "ledger_lot_use" ("journal_id")',
    'CREATE UNIQUE INDEX IF NOT EXISTS "ledgerlotuse_journal_id_seq" ON "ledger_lot_use" ("journal_id", "seq")',
    'CREATE INDEX IF NOT EXISTS "ledgerlotuse_lot_id" ON "ledger_lot_use" ("lot_id")',
]
SQLITE = sqlite_types(POSTGRES)


def upgrade(db):
    ddl(db, SQLITE, POSTGRES)
