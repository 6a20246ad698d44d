"""Customer service (客服): queue with caps, agent lock, presence and timeouts, live conversations, complaints.

Public interface (the API and jobs code against it):
    desk: request_service, take, dispatch, go_online/go_away/go_offline, heartbeats, transfer, close, csat, expire
    complaints: ticket_from_conversation, log_call, post_review
    live: subscribe/publish (fan-out), events
"""
from app.services.service import complaints, desk, live, policy  # noqa: F401


def register():
    """The service policy kind, its cross-check, required rulesets and engine actions; called by app.contexts."""
    policy.register()


def seed_demo():
    """Demo: the cs agents of the tickets demo are the service agents; nothing else is needed (idempotent)."""
    return None
