"""The customer view for the agent: one call with everything needed to help a user without leaving the desk.

Each part comes from its own context's public functions; a part that fails (the shop connector down, no
member yet) is reported in ``errors`` with its problem code, and the rest is still returned.
"""
from app.errors import Problem
from app.models.service import ServiceConversation
from app.platform import timefmt


def _part(errors, name, fn):
    try:
        return fn()
    except Problem as exc:
        errors[name] = {"code": exc.code, "status": exc.status, "detail": exc.detail}
        return None


def view(user_id, orders=5, conversations=5):
    """Member level and benefits, service benefits, balances, recent orders, open tickets, recent conversations."""
    from app.services.service import connectors, ledger_port, membership_port, tickets_port
    errors = {}
    member = _part(errors, "member", lambda: membership_port.member_view(user_id))
    convs = (ServiceConversation.select().where(ServiceConversation.user_id == user_id)
             .order_by(ServiceConversation.id.desc()).limit(conversations))
    return {
        "user_id": user_id,
        "member": ({"level": member["level"], "growth": member.get("growth"), "paid": member.get("paid"),
                    "benefits": member.get("benefits")} if member else None),
        "service_benefits": _part(errors, "service_benefits", lambda: membership_port.service_benefits(user_id)),
        "balances": _part(errors, "balances", lambda: ledger_port.balances(user_id)),
        "recent_orders": _part(errors, "recent_orders", lambda: connectors.lookup("list_orders", user_id, 10)[:orders]),
        "open_tickets": _part(errors, "open_tickets",
                              lambda: tickets_port.open_tickets(user_id)),
        "recent_conversations": [{"id": c.id, "state": c.state, "group": c.group, "agent": c.agent,
                                  "topic": c.topic, "close_category": c.close_category,
                                  "close_summary": c.close_summary, "csat_score": c.csat_score,
                                  "created_at": timefmt.iso(c.created_at),
                                  "closed_at": timefmt.iso(c.closed_at) if c.closed_at else None} for c in convs],
        "errors": errors,
    }
