"""job_run: exactly-once record of job ids and periodic ticks."""
from app.models.jobs import JobRun


def upgrade(db):
    db.create_tables([JobRun])
