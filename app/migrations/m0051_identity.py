"""Staff credentials and sessions; audit log columns (request id, person, credential, policy version,
before/after) and append-only triggers; idempotency client ids wide enough for ``staff:<staff_no>``.

Frozen DDL (see docs/architecture.md, Migrations): never edit, never import app.models."""
from app.migrations import ddl, sqlite_types

_AUDIT_COLUMNS = [
    'ALTER TABLE "audit_log" ADD COLUMN "request_id" VARCHAR(128)',
    'ALTER TABLE "audit_log" ADD COLUMN "staff_no" VARCHAR(64)',
    'ALTER TABLE "audit_log" ADD COLUMN "credential" VARCHAR(100)',
    'ALTER TABLE "audit_log" ADD COLUMN "policy_version" VARCHAR(64)',
    'ALTER TABLE "audit_log" ADD COLUMN "before" TEXT',
    'ALTER TABLE "audit_log" ADD COLUMN "after" TEXT',
    'CREATE INDEX IF NOT EXISTS "audit_log_action" ON "audit_log" ("action")',
    'CREATE INDEX IF NOT EXISTS "audit_log_subject" ON "audit_log" ("subject")',
    'CREATE INDEX IF NOT EXISTS "audit_log_request_id" ON "audit_log" ("request_id")',
    'CREATE INDEX IF NOT EXISTS "audit_log_staff_no" ON "audit_log" ("staff_no")',
]

SHARED = [
    """CREATE TABLE IF NOT EXISTS "staff_credential" (
        "id" SERIAL NOT NULL PRIMARY KEY,
        "staff_no" VARCHAR(64) NOT NULL,
        "password_hash" TEXT NOT NULL,
        "password_changed_at" TIMESTAMP NOT NULL,
        "must_change" BOOLEAN NOT NULL,
        "failed_count" INTEGER NOT NULL,
        "lockouts" INTEGER NOT NULL,
        "locked_until" TIMESTAMP,
        "totp_secret" VARCHAR(64),
        "totp_enabled" BOOLEAN NOT NULL,
        "totp_last_step" BIGINT,
        "updated_at" TIMESTAMP NOT NULL)""",
    'CREATE UNIQUE INDEX IF NOT EXISTS "staff_credential_staff_no" ON "staff_credential" ("staff_no")',
    """CREATE TABLE IF NOT EXISTS "staff_session" (
        "id" SERIAL NOT NULL PRIMARY KEY,
        "token_id" VARCHAR(32) NOT NULL,
        "secret_hash" VARCHAR(64) NOT NULL,
        "csrf_hash" VARCHAR(64),
        "staff_no" VARCHAR(64) NOT NULL,
        "transport" VARCHAR(16) NOT NULL,
        "mfa" BOOLEAN NOT NULL,
        "created_at" TIMESTAMP NOT NULL,
        "expires_at" TIMESTAMP NOT NULL,
        "revoked_at" TIMESTAMP,
        "revoked_reason" VARCHAR(64))""",
    'CREATE UNIQUE INDEX IF NOT EXISTS "staff_session_token_id" ON "staff_session" ("token_id")',
    'CREATE INDEX IF NOT EXISTS "staff_session_staff_no" ON "staff_session" ("staff_no")',
    *_AUDIT_COLUMNS,
]
POSTGRES = SHARED + [
    "CREATE OR REPLACE FUNCTION audit_append_only() RETURNS trigger AS $$ BEGIN "
    "RAISE EXCEPTION 'audit log is append-only: %% on %% refused', TG_OP, TG_TABLE_NAME; END $$ "
    "LANGUAGE plpgsql",
    "CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log "
    "FOR EACH ROW EXECUTE FUNCTION audit_append_only()",
    'ALTER TABLE "idempotency_record" ALTER COLUMN "client" TYPE VARCHAR(80)',
]
SQLITE = sqlite_types(SHARED) + [
    "CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log "
    "BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END",
    "CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log "
    "BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END",
    # SQLite cannot change a column's type: rebuild the table with the wider client column
    """CREATE TABLE "idempotency_record_0051" (
        "id" INTEGER NOT NULL PRIMARY KEY,
        "client" VARCHAR(80) NOT NULL,
        "key" VARCHAR(200) NOT NULL,
        "operation" VARCHAR(100) NOT NULL,
        "request_digest" VARCHAR(64) NOT NULL,
        "status_code" INTEGER NOT NULL,
        "response" TEXT NOT NULL,
        "created_at" DATETIME NOT NULL)""",
    'INSERT INTO "idempotency_record_0051" ("id", "client", "key", "operation", "request_digest", "status_code", '
    '"response", "created_at") SELECT "id", "client", "key", "operation", "request_digest", "status_code", '
    '"response", "created_at" FROM "idempotency_record"',
    'DROP TABLE "idempotency_record"',
    'ALTER TABLE "idempotency_record_0051" RENAME TO "idempotency_record"',
    'CREATE UNIQUE INDEX IF NOT EXISTS "idempotency_record_client_key" ON "idempotency_record" ("client", "key")',
]



def upgrade(db):
    ddl(db, SQLITE, POSTGRES)
