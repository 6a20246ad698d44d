"""Ticket approvals record the credential that proved the approver's identity (distinct approvers per credential)."""


def upgrade(db):
    if "credential" not in {c.name for c in db.get_columns("ticket_approval")}:
        db.execute_sql('ALTER TABLE ticket_approval ADD COLUMN "credential" VARCHAR(100)')
