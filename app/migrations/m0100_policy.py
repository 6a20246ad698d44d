"""Policy sets, the active pointer (one row), activation history, decision log."""
from app.models.policy import Decision, PolicyActivation, PolicyActive, PolicyVersion


def upgrade(db):
    db.create_tables([PolicyVersion, PolicyActive, PolicyActivation, Decision])
    PolicyActive.insert(id=1, version=None, seq=0).execute()
