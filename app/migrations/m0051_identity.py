"""Staff credentials and sessions; audit log columns (request id, person, credential, policy version, before/after)
made append-only; idempotency client ids wide enough for ``staff:<staff_no>``."""
from app.db import is_postgres
from app.models.staff import StaffCredential, StaffSession

AUDIT_COLUMNS = {"request_id": "VARCHAR(128)", "staff_no": "VARCHAR(64)", "credential": "VARCHAR(100)",
                 "policy_version": "VARCHAR(64)", "before": "TEXT", "after": "TEXT"}


def upgrade(db):
    db.create_tables([StaffCredential, StaffSession], safe=True)
    have = {c.name for c in db.get_columns("audit_log")}
    for name, sql_type in AUDIT_COLUMNS.items():
        if name not in have:  # a database made before this step (m0001 builds the table from today's model)
            db.execute_sql(f'ALTER TABLE audit_log ADD COLUMN "{name}" {sql_type}')
    for name in ("action", "subject", "request_id", "staff_no"):
        db.execute_sql(f'CREATE INDEX IF NOT EXISTS audit_log_{name} ON audit_log ("{name}")')
    if is_postgres():
        db.execute_sql("ALTER TABLE idempotency_record ALTER COLUMN client TYPE VARCHAR(80)")
        db.execute_sql(
            "CREATE OR REPLACE FUNCTION audit_append_only() RETURNS trigger AS $$ BEGIN "
            "RAISE EXCEPTION 'audit log is append-only: %% on %% refused', TG_OP, TG_TABLE_NAME; END $$ "
            "LANGUAGE plpgsql")
        db.execute_sql("CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log "
                       "FOR EACH ROW EXECUTE FUNCTION audit_append_only()")
    else:
        for event in ("UPDATE", "DELETE"):
            db.execute_sql(f"CREATE TRIGGER audit_log_no_{event.lower()} BEFORE {event} ON audit_log "
                           f"BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END")
