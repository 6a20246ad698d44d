"""Ledger: drop the entry indexes on customer_id and account_id alone; (customer_id, id) and (account_id, id)
serve every lookup they served, and each index less is less work on every posting (entries are the ledger's
hottest insert).

Frozen DDL (see docs/architecture.md, Migrations): never edit, never import app.models."""
from app.migrations import ddl, sqlite_types

POSTGRES = [
    'DROP INDEX IF EXISTS "ledger_entry_customer_id"',
    'DROP INDEX IF EXISTS "ledger_entry_account_id"',
]
SQLITE = sqlite_types(POSTGRES)


def upgrade(database):
    ddl(database, SQLITE, POSTGRES)
