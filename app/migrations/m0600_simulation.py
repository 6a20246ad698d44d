"""Simulation: API runs, shadow sets and their differences."""
from app.models.simulation import MODELS


def upgrade(db):
    db.create_tables(MODELS)
