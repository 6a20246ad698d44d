"""Outbox messages, webhooks, deliveries and their attempts."""
from app.models.outbox import MODELS


def upgrade(db):
    db.create_tables(MODELS)
