"""Membership tables: members, events, growth journal, level changes, caps, points awards, plans, coupons."""
from app.models.membership import MODELS


def upgrade(db):
    db.create_tables(MODELS)
