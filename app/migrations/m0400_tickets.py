"""Tickets: tickets, history, comments, attachments, approvals, SLA events, auto actions, notices."""
from app.models.tickets import MODELS


def upgrade(db):
    db.create_tables(MODELS)
