"""Customer service: groups, agents (presence and lock), conversations, events, complaints, calls, reviews, nodes."""
from app.models.service import MODELS


def upgrade(db):
    db.create_tables(MODELS)
    # one open conversation per user, whichever process asks (partial index: both engines)
    db.execute_sql("CREATE UNIQUE INDEX IF NOT EXISTS service_conversation_one_open "
                   "ON service_conversation (user_id) WHERE state <> 'closed'")
