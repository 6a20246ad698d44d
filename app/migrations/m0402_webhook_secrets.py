"""Webhook secrets encrypted at rest: the column becomes TEXT (a Fernet token of a 200-character secret
is longer than VARCHAR(200)) and every plain secret is encrypted with the configured key.

Frozen DDL (see docs/architecture.md, Migrations): never edit, never import app.models. SQLite cannot
change a column's type: a new column is added, filled, and renamed over the old one (SQLite >= 3.35).
"""
from app.migrations import ddl, engine_of

SQLITE = [
    'ALTER TABLE "webhook" ADD COLUMN "secret_encrypted" TEXT NOT NULL DEFAULT \'\'',
]
POSTGRES = [
    'ALTER TABLE "webhook" ALTER COLUMN "secret" TYPE TEXT',
]
SQLITE_AFTER = [
    'ALTER TABLE "webhook" DROP COLUMN "secret"',
    'ALTER TABLE "webhook" RENAME COLUMN "secret_encrypted" TO "secret"',
]


def upgrade(db):
    ddl(db, SQLITE, POSTGRES)
    encrypt_plain(db, "secret_encrypted" if engine_of(db) == "sqlite" else "secret")
    ddl(db, SQLITE_AFTER, [])


def encrypt_plain(db, target="secret"):
    """Write each row's secret, encrypted unless it already is, into ``target``; returns rows encrypted."""
    from app.platform import crypto
    param = "?" if engine_of(db) == "sqlite" else "%s"
    n = 0
    for hook_id, secret in db.execute_sql('SELECT "id", "secret" FROM "webhook"').fetchall():
        value = secret if crypto.is_encrypted(secret) else crypto.encrypt(secret)
        n += value != secret
        db.execute_sql(f'UPDATE "webhook" SET "{target}" = {param} WHERE "id" = {param}', [value, hook_id])
    return n
