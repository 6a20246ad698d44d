"""Membership: points mall, vouchers held, benefit grants, orders paid through checkout and their refunds, profiles."""
from app.models.membership import MODELS_0302


def upgrade(db):
    db.create_tables(MODELS_0302)
