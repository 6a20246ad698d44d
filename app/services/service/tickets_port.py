"""The service context's only door to tickets: open a ticket, check whose it is, add an internal note."""
from app.services import tickets
from app.services.tickets import sla as tickets_sla


def open_ticket(principal, body):
    """Create a ticket (routed, prioritised and SLA-timed by the tickets context); returns its id."""
    _, ticket, _ = tickets.create(principal, body, None)
    return ticket["id"]


def ticket_user(ticket_id):
    """The user a ticket belongs to (404 when there is no such ticket)."""
    return tickets.get_ticket(ticket_id).user_id


def note(principal, ticket_id, text):
    """An internal comment on a ticket by the person acting (the caller's identity)."""
    tickets.comment(principal, ticket_id, {"author_kind": "staff", "visibility": "internal", "body": text})


def open_tickets(user_id, limit=20):
    """The user's tickets that are not finished, newest first."""
    return tickets.list_tickets({"user_id": user_id, "open": True}, limit=limit)["items"]


def sla_risk(ticket_ids, now=None):
    """{"at_risk": n, "breached": n} of these tickets' SLA clocks now (ids, or a select of ids; tickets.sla.risk_counts)."""
    return tickets_sla.risk_counts(ticket_ids, now)


def ticket_brief(ticket_id):
    """Who worked a ticket and where (404 when there is no such ticket): for a QA review of it."""
    t = tickets.get_ticket(ticket_id)
    return {"assignee": t.assignee, "created_by": t.created_by, "department": t.department, "channel": t.channel,
            "created_at": t.created_at}
