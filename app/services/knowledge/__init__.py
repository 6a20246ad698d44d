"""Knowledge base (话术 and process guides) for agents and the bot: versions, review, Chinese search, usage.

Public interface: entries (create, revise, submit, review, restore, versions, search, suggest, use).
"""
from app.services.knowledge import entries, search  # noqa: F401


def register():
    """No policy kinds or rulesets of its own (the bot's thresholds live in the service policy)."""
    return None


def seed_demo():
    """Demo knowledge: the published FAQ entries of bench/bot (idempotent)."""
    from app.services.knowledge import demo
    return demo.seed()
