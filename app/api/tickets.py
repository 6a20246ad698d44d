"""Tickets HTTP API: create/read/list, transitions and approvals, assignment, comments, attachments, stats, webhooks."""

from flask import Blueprint, g, jsonify, request

from app.platform import timefmt
from app.api import idempotency_key, operation, page, page_args, page_query, q, query_int
from app.errors import Problem, validation_failed
from app.platform import outbox
from app.platform.export import csv_response
from app.services import tickets
from app.services.tickets import stats as tickets_stats

bp = Blueprint("tickets", __name__, url_prefix="/v1")

TAGS = ["tickets"]
TICKET_PROBLEMS = {403: "role-not-allowed, department-not-allowed, approver-not-distinct, not-ticket-user",
                   409: "transition-not-allowed (names the allowed ones), state-changed, no-approval-pending, "
                        "ticket-closed, idempotency-key-reused",
                   422: "actor-required, comment-required, unknown-staff, unknown-department, unknown-queue"}
LIST_QUERY = {"status": "workflow state", "category": "category", "department": "department code",
              "priority": "P1..P4", "assignee": "staff_no",
              "sla": q("SLA state", enum=["ok", "warning", "breached"]),
              "user_id": "user", "channel": "channel", "queue": "queue",
              "open": q("only open (true) or closed (false) tickets", enum=["true", "false"]),
              "cursor": q("next_cursor of the previous page", "integer", minimum=1, maximum=2**63 - 1),
              "limit": q("page size", "integer", minimum=1, maximum=200, default=50)}


def _respond(status, result, replayed=False):
    resp = jsonify(result)
    resp.status_code = status
    if replayed:
        resp.headers["Idempotent-Replayed"] = "true"
    return resp


def _instant(name):
    return timefmt.parse(request.args.get(name) or None, f"/query/{name}")


@bp.post("/tickets")
@operation("Create a ticket (routed and prioritised by rules; idempotent)", scope="tickets:write",
           body="api/tickets/create.json", idempotent=True, tags=TAGS, status=201, permission="ticket.create",
           allow_service=True, audit="ticket.create",
           problems={409: "workflow-missing, idempotency-key-reused", 422: "unknown-category, validation-failed"},
           response="api/tickets/ticket.json")
def create_ticket():
    status, result, replayed = tickets.create(g.principal, g.body, idempotency_key())
    return _respond(status, result, replayed)


@bp.get("/tickets")
@operation("List tickets, newest first, with filters and cursor pagination", scope="tickets:read", tags=TAGS,
           query=LIST_QUERY,
           response="api/tickets/ticket_page.json")
def list_tickets():
    filters = {}
    for name in tickets.LIST_FILTERS:
        if request.args.get(name):
            filters[name] = request.args[name]
    if request.args.get("open"):
        if request.args["open"] not in ("true", "false"):
            raise validation_failed([{"pointer": "/query/open", "validator": "enum", "message": "true or false"}])
        filters["open"] = request.args["open"]
    return jsonify(tickets.list_tickets(filters, cursor=query_int("cursor"), limit=query_int("limit")))


@bp.get("/tickets/<int:ticket_id>")
@operation("A ticket with its SLA clocks and allowed transitions", scope="tickets:read", tags=TAGS,
           response="api/tickets/ticket_detail.json")
def get_ticket(ticket_id):
    return jsonify(tickets.get(ticket_id))


@bp.post("/tickets/<int:ticket_id>/transitions")
@operation("Take a workflow transition as the signed-in person (409 transition-not-allowed names the allowed "
           "ones)", scope="tickets:write", body="api/tickets/transition.json", idempotent=True, tags=TAGS,
           permission="ticket.transition", allow_service=True, problems=TICKET_PROBLEMS,
           response="api/tickets/ticket_detail.json")
def transition(ticket_id):
    status, result, replayed = tickets.transition(g.principal, ticket_id, g.body, idempotency_key())
    return _respond(status, result, replayed)


@bp.post("/tickets/<int:ticket_id>/approvals")
@operation("Approve or reject the pending approval step as the signed-in person", scope="tickets:write",
           body="api/tickets/approval.json", idempotent=True, tags=TAGS,
           permission=("ticket.approve.l1", "ticket.approve.l2"), problems=TICKET_PROBLEMS,
           response="api/tickets/ticket_detail.json")
def approve(ticket_id):
    status, result, replayed = tickets.approve(g.principal, ticket_id, g.body, idempotency_key())
    return _respond(status, result, replayed)


@bp.get("/tickets/<int:ticket_id>/approvals")
@operation("Approval decisions of a ticket", scope="tickets:read", tags=TAGS,
           response="api/tickets/approval_list.json")
def list_approvals(ticket_id):
    return jsonify(items=tickets.approvals(ticket_id))


@bp.post("/tickets/<int:ticket_id>/assign")
@operation("Reassign to a person and/or department/queue", scope="tickets:write", body="api/tickets/assign.json",
           tags=TAGS, permission="ticket.assign", allow_service=True, problems=TICKET_PROBLEMS,
           idempotent="replay",
           response="api/tickets/ticket_detail.json")
def assign(ticket_id):
    return jsonify(tickets.assign(g.principal, ticket_id, g.body))


@bp.post("/tickets/<int:ticket_id>/comments")
@operation("Comment as the signed-in person (internal/public), or relay the user's comment (a service)",
           scope="tickets:write", body="api/tickets/comment.json", tags=TAGS, status=201,
           permission="ticket.comment", allow_service=True, audit="ticket.comment", problems=TICKET_PROBLEMS,
           idempotent="replay",
           response="api/tickets/comment_view.json")
def add_comment(ticket_id):
    return _respond(201, tickets.comment(g.principal, ticket_id, g.body))


@bp.get("/tickets/<int:ticket_id>/comments")
@operation("Comments of a ticket", scope="tickets:read", tags=TAGS, query={"visibility": q("comment visibility", enum=["internal", "public"])},
           response="api/tickets/comment_list.json")
def list_comments(ticket_id):
    visibility = request.args.get("visibility")
    if visibility not in (None, "internal", "public"):
        raise validation_failed([{"pointer": "/query/visibility", "validator": "enum",
                                  "message": "internal or public"}])
    return jsonify(items=tickets.comments(ticket_id, visibility))


@bp.post("/tickets/<int:ticket_id>/attachments")
@operation("Attach a file by reference", scope="tickets:write", body="api/tickets/attachment.json", tags=TAGS,
           status=201, permission="ticket.comment", allow_service=True, audit="ticket.attach",
           problems=TICKET_PROBLEMS, idempotent="replay",
           response="api/tickets/attachment_view.json")
def add_attachment(ticket_id):
    return _respond(201, tickets.add_attachment(g.principal, ticket_id, g.body))


@bp.get("/tickets/<int:ticket_id>/attachments")
@operation("Attachments of a ticket", scope="tickets:read", tags=TAGS,
           response="api/tickets/attachment_list.json")
def list_attachments(ticket_id):
    return jsonify(items=tickets.attachments(ticket_id))


@bp.get("/tickets/<int:ticket_id>/history")
@operation("Every change: who, when, field from -> to, policy version and rule", scope="tickets:read", tags=TAGS,
           response="api/tickets/history.json")
def history(ticket_id):
    return jsonify(items=tickets.history(ticket_id))


@bp.get("/tickets/<int:ticket_id>/status")
@operation("The user-visible view: status, public replies, notices", scope="tickets:read", tags=TAGS,
           query={"user_id": "only if the ticket belongs to this user"},
           response="api/tickets/user_view.json")
def user_status(ticket_id):
    return jsonify(tickets.user_view(ticket_id, request.args.get("user_id")))


@bp.get("/ticket-notices")
@operation("User-facing notices of a user, newest first", scope="tickets:read", tags=TAGS,
           query={"user_id": q("the user", required=True, minLength=1), **page_query()},
           response="api/tickets/notices_page.json")
def notices():
    user_id = request.args.get("user_id")
    if not user_id:
        raise validation_failed([{"pointer": "/query/user_id", "validator": "required", "message": "required"}])
    cursor, limit = page_args()
    return page(*tickets.notices(user_id, limit, cursor))


@bp.get("/ticket-workflows")
@operation("Categories and workflows of the active policy", scope="tickets:read", tags=TAGS,
           response="api/tickets/workflows.json")
def workflows():
    return jsonify(tickets.workflows())


@bp.get("/ticket-stats")
@operation("Ticket statistics: volume, backlog by age, SLA compliance, response/resolution times",
           scope="tickets:read", tags=TAGS, problems={422: "invalid-window, validation-failed"},
           query={"from": "ISO date-time (default to - 30 days)",
                                                   "to": "ISO date-time (default now)",
                                                   "format": q("json (default) or csv", enum=["json", "csv"])},
           content={"text/csv": "format=csv: UTF-8 CSV with a BOM"},
           response="api/tickets/stats.json")
def stats():
    fmt = request.args.get("format", "json")
    if fmt not in ("json", "csv"):
        raise validation_failed([{"pointer": "/query/format", "validator": "enum", "message": "json or csv"}])
    start, end = _instant("from"), _instant("to")
    if start and end and start >= end:
        raise Problem(422, "invalid-window", "Invalid window", "'from' must be before 'to'")
    data = tickets_stats.stats(start, end)
    if fmt == "csv":
        return csv_response(tickets_stats.to_csv(data), "ticket-stats.csv")
    return jsonify(data)


@bp.post("/webhooks")
@operation("Register a webhook for outbox messages (signed with the returned secret)", scope="admin",
           body="api/tickets/webhook.json", tags=["outbox"], status=201, idempotent="replay",
           problems={422: "invalid-url, validation-failed"},
           response="api/tickets/webhook_created.json")
def create_webhook():
    body = g.body
    hook, secret = outbox.create_webhook(body["name"], body["url"], body.get("topics", "*"), body.get("secret"))
    return _respond(201, {"id": hook.id, "name": hook.name, "url": hook.url, "topics": hook.topics,
                          "secret": secret})


@bp.delete("/webhooks/<int:webhook_id>")
@operation("Deactivate a webhook", scope="admin", tags=["outbox"], idempotent="replay",
           response="api/tickets/webhook_deactivated.json")
def delete_webhook(webhook_id):
    outbox.deactivate_webhook(webhook_id)
    return jsonify(id=webhook_id, active=False)


@bp.get("/outbox/deliveries")
@operation("Outbox deliveries, newest first", scope="admin", tags=["outbox"],
           query={"message_id": q("one message", "integer", minimum=1, maximum=2**63 - 1),
                  "status": q("delivery status", enum=["pending", "delivered", "dead", "dropped"]),
                  **page_query(maximum=500, default=100)},
           response="api/tickets/deliveries_page.json")
def list_deliveries():
    status = request.args.get("status")
    if status not in (None, "pending", "delivered", "dead", "dropped"):
        raise validation_failed([{"pointer": "/query/status", "validator": "enum",
                                  "message": "pending, delivered, dead or dropped"}])
    cursor, limit = page_args()
    return page(*outbox.deliveries(query_int("message_id"), status, limit, cursor))


@bp.get("/outbox/deliveries/<int:delivery_id>/attempts")
@operation("Attempts of one delivery", scope="admin", tags=["outbox"],
           response="api/tickets/attempt_list.json")
def list_attempts(delivery_id):
    return jsonify(items=outbox.attempts(delivery_id))
