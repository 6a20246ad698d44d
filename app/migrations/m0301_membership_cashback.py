"""Membership: cashback awards (cashback benefit credited per order through the ledger)."""
from app.models.membership import MODELS_0301


def upgrade(db):
    db.create_tables(MODELS_0301)
