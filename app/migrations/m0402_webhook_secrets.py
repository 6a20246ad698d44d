"""Webhook secrets encrypted at rest: the column becomes TEXT and every plain secret is encrypted."""


def upgrade(db):
    import peewee

    from app.platform import crypto
    postgres = isinstance(getattr(db, "obj", db), peewee.PostgresqlDatabase)
    if postgres:  # a Fernet token of a 200-character secret is longer than the old VARCHAR(200)
        db.execute_sql('ALTER TABLE "webhook" ALTER COLUMN "secret" TYPE TEXT')
    rows = db.execute_sql('SELECT "id", "secret" FROM "webhook"').fetchall()
    param = "%s" if postgres else "?"
    for hook_id, secret in rows:
        if not crypto.is_encrypted(secret):
            db.execute_sql(f'UPDATE "webhook" SET "secret" = {param} WHERE "id" = {param}',
                           [crypto.encrypt(secret), hook_id])
