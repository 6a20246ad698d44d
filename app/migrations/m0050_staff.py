"""Departments and staff."""
from app.models.staff import Department, Staff


def upgrade(db):
    db.create_tables([Department, Staff])
