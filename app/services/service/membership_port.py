"""The service context's only door to membership: user facts and service benefits for queue priority."""
from app.errors import Problem
from app.services import membership


def facts(user_id):
    """(user facts, service benefit) when membership knows the user, else None (also without a membership policy).

    user facts: {"level", "paid", "plan"}; benefit: {"priority", "queue", "dedicated_agent", "rules"}.
    """
    try:
        found = membership.user_facts(user_id)
        if not found or not found.get("known"):
            return None
        sb = membership.service_benefits(user_id)
    except Problem:
        return None
    user = {"level": found.get("level"), "paid": bool(found.get("paid")), "plan": found.get("plan")}
    benefit = {"priority": sb.get("priority", 0), "queue": sb.get("queue"),
               "dedicated_agent": bool(sb.get("dedicated_agent")), "rules": sb.get("rules", [])}
    return user, benefit


def member_view(user_id):
    """The member view (level, growth, paid plan, benefits in force); 404 problem for an unknown member."""
    return membership.view(user_id)


def service_benefits(user_id):
    """Service benefits of the user's level and plan (priority, queue, dedicated agent)."""
    return membership.service_benefits(user_id)
