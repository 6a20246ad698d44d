"""Ledger tables, plus triggers that make journals and entries append-only on both backends."""
from app.db import is_postgres
from app.models.ledger import MODELS

APPEND_ONLY = ("ledger_journal", "ledger_entry")


def upgrade(db):
    db.create_tables(MODELS)
    db.execute_sql("CREATE INDEX IF NOT EXISTS ledger_lot_open ON ledger_lot (account_id, expires_at) "
                   "WHERE state = 'open'")
    db.execute_sql("CREATE INDEX IF NOT EXISTS ledger_hold_open ON ledger_hold (expires_at) "
                   "WHERE state = 'held'")
    if is_postgres():
        db.execute_sql(
            "CREATE OR REPLACE FUNCTION ledger_append_only() RETURNS trigger AS $$ BEGIN "
            "RAISE EXCEPTION 'ledger is append-only: %% on %% refused', TG_OP, TG_TABLE_NAME; END $$ "
            "LANGUAGE plpgsql")
        for table in APPEND_ONLY:
            db.execute_sql(f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                           f"FOR EACH ROW EXECUTE FUNCTION ledger_append_only()")
    else:
        for table in APPEND_ONLY:
            for event in ("UPDATE", "DELETE"):
                db.execute_sql(f"CREATE TRIGGER {table}_no_{event.lower()} BEFORE {event} ON {table} "
                               f"BEGIN SELECT RAISE(ABORT, 'ledger is append-only'); END")
