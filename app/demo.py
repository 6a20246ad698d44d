"""Demo data for the embedded default: every context's ``seed_demo()``, listed in app.contexts."""
from app import contexts


def seed():
    """Seed the demo data of every context (idempotent); returns each context's result."""
    return contexts.seed_demo()
