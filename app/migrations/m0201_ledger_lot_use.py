"""Ledger: lot uses of recorded lot spends (what each lot paid, what was refunded to it)."""
from app.db import is_postgres


def upgrade(db):
    # Frozen schema step: plain DDL, never the current models.
    pk = "SERIAL PRIMARY KEY" if is_postgres() else "INTEGER NOT NULL PRIMARY KEY"
    db.execute_sql(f"CREATE TABLE IF NOT EXISTS ledger_lot_use (id {pk}, "
                   "journal_id INTEGER NOT NULL REFERENCES ledger_journal (id), "
                   "lot_id INTEGER NOT NULL REFERENCES ledger_lot (id), seq INTEGER NOT NULL, "
                   "amount_minor BIGINT NOT NULL, refunded_minor BIGINT NOT NULL DEFAULT 0)")
    db.execute_sql("CREATE UNIQUE INDEX IF NOT EXISTS ledger_lot_use_journal_seq ON ledger_lot_use (journal_id, seq)")
    db.execute_sql("CREATE INDEX IF NOT EXISTS ledger_lot_use_lot ON ledger_lot_use (lot_id)")
