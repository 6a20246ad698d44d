"""The tickets context's only door to membership: what routing may know about a user."""
from app.errors import Problem
from app.services import membership


def user_facts(user_id):
    """{"level", "paid", "plan"} when membership knows the user, else None (also without a membership policy)."""
    try:
        found = membership.user_facts(user_id)
    except Problem:  # membership policy absent: the caller's facts stand
        return None
    if not found or not found.get("known"):
        return None
    return {"level": found.get("level"), "paid": bool(found.get("paid")), "plan": found.get("plan")}
