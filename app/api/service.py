"""Customer-service HTTP API: users ask and talk (via the app backend), agents serve, live streams, complaints."""
import json

from flask import Blueprint, Response, current_app, g, jsonify, request

from app.api import PAGE, idempotency_key, operation, page, page_args, page_query, q, query_int
from app.db import connection
from app.services.service import compensation, complaints, desk, live, monitoring, stats
from app.services.service.policy import current

bp = Blueprint("service", __name__, url_prefix="/v1/service")

TAGS = ["service"]
SERVE = {"scope": "service:write", "permission": "service.serve"}
TOKEN_QUERY = {"token": "the conversation's user token (instead of an API key)"}
# A stream resumes from Last-Event-ID; a first connect (EventSource cannot set headers) passes the same value as
# ``cursor``. It is not a list: it takes no limit. Its polling fallback (``.../events``) is a feed: PAGE.
RESUME = {"cursor": q("resume after this event (seq of a conversation, id of an agent's events); "
                      "Last-Event-ID wins", "integer", minimum=0, maximum=2**63 - 1)}


def _respond(status, result):
    resp = jsonify(result)
    resp.status_code = status
    return resp


# --- users (through the app backend's key; the browser's live stream with the user token) -----------

@bp.post("/conversations")
@operation("A user asks for service: queued (or refused at once when the queue is at its cap); asking again "
           "while a conversation is open answers it (200)",
           scope="service:write", body="api/service/request.json", tags=TAGS, status=201,
           idempotent="body:user_id", also={200: "the user's open conversation, answered again"},
           problems={429: "queue-full: the group's queue is at its cap (nothing is created)",
                     409: "outside-business-hours"},  # a refusal's decision row must outlive the 429: no replay transaction
           response="api/service/conversation_opened.json")
def request_service():
    status, out = desk.request_service(g.body)
    return _respond(status, out)


@bp.get("/conversations/<int:conv_id>")
@operation("A conversation now: state, agent, queue position and estimated wait", scope="service:read", tags=TAGS,
           response="api/service/conversation.json")
def get_conversation(conv_id):
    return jsonify(desk.view(conv_id))


@bp.post("/conversations/<int:conv_id>/messages")
@operation("The user sends a message (text, image by reference, order card)", scope="service:write",
           body="api/service/user_message.json", tags=TAGS, status=201, idempotent="replay",
           response="api/service/message_sent.json")
def user_message(conv_id):
    return _respond(201, desk.user_message(conv_id, g.body))


@bp.post("/conversations/<int:conv_id>/heartbeat")
@operation("The user is still there", scope="service:write", body="api/service/user_ref.json",
           tags=TAGS, idempotent="replay",
           response="api/service/conversation.json")
def user_heartbeat(conv_id):
    return jsonify(desk.user_heartbeat(conv_id, g.body["user_id"]))


@bp.post("/conversations/<int:conv_id>/leave")
@operation("The user leaves (explicit offline): an agent serving them is freed", scope="service:write",
           body="api/service/user_ref.json", tags=TAGS, idempotent="replay",
           response="api/service/conversation.json")
def user_leave(conv_id):
    return jsonify(desk.leave(conv_id, g.body["user_id"]))


@bp.post("/conversations/<int:conv_id>/csat")
@operation("The satisfaction survey after close", scope="service:write", body="api/service/csat.json",
           tags=TAGS, idempotent="replay",
           response="api/service/conversation.json")
def csat(conv_id):
    return jsonify(desk.csat(conv_id, g.body))


@bp.get("/conversations/<int:conv_id>/transcript")
@operation("The whole conversation (the reference a ticket carries)", scope="service:read", tags=TAGS,
           response="api/service/transcript.json")
def transcript(conv_id):
    return jsonify(desk.transcript(conv_id))


@bp.get("/conversations/<int:conv_id>/decisions")
@operation("Why this user was queued, assigned, requeued or closed (decision log)", scope="service:read", tags=TAGS,
           response="api/service/decisions.json")
def conversation_decisions(conv_id):
    return jsonify({"items": desk.decisions(conv_id)})


def _user_access(conv_id):
    """An API key with service:read, or the conversation's user token (``?token=``); returns True for the token."""
    header = request.headers.get("Authorization")
    if header:
        from app.platform.auth import authenticate, require_scope
        require_scope(authenticate(header), "service:read")
        desk.get_conversation(conv_id)
        return False
    desk.check_user_token(conv_id, request.args.get("token"))
    return True


def _resume():
    """Where a stream goes on from: Last-Event-ID (a reconnect), else ``cursor`` (a first connect), else 0."""
    raw = request.headers.get("Last-Event-ID")
    if raw is not None and raw.isdigit() and len(raw) < 19:
        return int(raw)
    return query_int("cursor", 0)


def _feed(items, cursor, key):
    """A page of a feed: ``next_cursor`` is where to poll from next (the last event's ``key``, else the cursor
    given), so a poller never goes back and never skips; null only before the first event."""
    return page(items, items[-1][key] if items else cursor)


@bp.get("/conversations/<int:conv_id>/events")
@operation("Cursor polling of a conversation's events, oldest first (fallback for the live stream); user token or "
           "key", public=True, tags=TAGS, response="api/service/conversation_events_page.json",
           query={**TOKEN_QUERY, "wait": "seconds to wait for a new event (0-25)",
                  **page_query(maximum=500, default=100)},
           problems={401: "neither an API key nor the conversation's user token", 403: "a wrong user token, or a key "
                     "without service:read"})
def poll_events(conv_id):
    by_token = _user_access(conv_id)
    cursor, limit = page_args()
    wait = query_int("wait", 0, 0, 25)
    sub = live.subscribe(f"c:{conv_id}") if wait else None
    try:
        items = desk.events_after(conv_id, cursor or 0, limit=limit)
        if not items and wait:
            if by_token:
                desk.expire(conversation_id=conv_id)
            sub.wait(wait)
            items = desk.events_after(conv_id, cursor or 0, limit=limit)
    finally:
        if sub is not None:
            sub.close()
    return _feed(items, cursor, "seq")


def _sse(ev, ident):
    return f"id: {ident}\nevent: {ev['kind']}\ndata: {json.dumps(ev, ensure_ascii=False, separators=(',', ':'))}\n\n"


@bp.get("/conversations/<int:conv_id>/stream")
@operation("Live events of a conversation (Server-Sent Events; resumes from Last-Event-ID); user token or key",
           public=True, tags=TAGS, query={**TOKEN_QUERY, **RESUME}, response=False,
           content={"text/event-stream": "id/event/data frames, one per conversation event; keep-alive comments"},
           problems={401: "neither an API key nor the conversation's user token", 403: "a wrong user token, or a key "
                     "without service:read"})
def user_stream(conv_id):
    by_token = _user_access(conv_id)
    last = _resume()
    app = current_app._get_current_object()
    keepalive = current().seconds("heartbeat_seconds", 10)
    sub = live.subscribe(f"c:{conv_id}")  # before the backlog is read: nothing falls in between
    if by_token:
        desk.user_connection(conv_id, True)

    def stream():
        nonlocal last
        try:
            with app.app_context():
                yield "retry: 2000\n\n"
                backlog = True
                while True:
                    if backlog:
                        with connection():
                            for ev in desk.events_after(conv_id, last):
                                last = ev["seq"]
                                yield _sse(ev, last)
                        backlog = False
                    items = sub.wait(keepalive)
                    if not items:
                        with connection():
                            desk.expire(conversation_id=conv_id)  # timeouts are told even between sweeps
                        live.touch_node()
                        backlog = True
                        yield ": keep-alive\n\n"
                        continue
                    for ev in sorted(items, key=lambda e: e["seq"]):
                        if ev["seq"] <= last:
                            continue
                        if ev["seq"] != last + 1:
                            backlog = True  # a gap (out-of-order fan-out): the database has it
                            break
                        last = ev["seq"]
                        if ev["audience"] != "agent":
                            yield _sse(ev, last)
        finally:
            sub.close()
            if by_token:
                with app.app_context(), connection():
                    desk.user_connection(conv_id, False)  # offline after the reconnect grace

    return Response(stream(), mimetype="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


# --- agents (the person acting: staff session, or an act-as key naming them) ------------------------

@bp.get("/agent")
@operation("Me as an agent: presence, lock, serving list", **SERVE, tags=TAGS,
           response="api/service/agent.json")
def agent_me():
    return jsonify(desk.agent_view(g.staff_no))


@bp.post("/agent/online")
@operation("Go online in my skill groups (auto-assignment may offer a user at once)", **SERVE,
           body="api/service/online.json", tags=TAGS, idempotent="state",
           response="api/service/agent.json")
def agent_online():
    return jsonify(desk.go_online(g.staff_no, g.body.get("groups")))


@bp.post("/agent/away")
@operation("Away: keep my users, take nobody new", **SERVE, tags=TAGS, idempotent="state",
           response="api/service/agent.json")
def agent_away():
    return jsonify(desk.go_away(g.staff_no))


@bp.post("/agent/offline")
@operation("Go offline: my lock opens, my users are requeued/ticketed/closed by policy and told", **SERVE,
           tags=TAGS, idempotent="state",
           response="api/service/agent.json")
def agent_offline():
    return jsonify(desk.go_offline(g.staff_no))


@bp.post("/agent/heartbeat")
@operation("I am still here", **SERVE, tags=TAGS, idempotent="replay",
           response="api/service/agent.json")
def agent_heartbeat():
    return jsonify(desk.agent_heartbeat(g.staff_no))


@bp.post("/agent/take")
@operation("Take the next user of my groups (refused while my lock is closed)", **SERVE, tags=TAGS, idempotent="replay",
           response="api/service/taken.json")
def agent_take():
    conv = desk.take(g.staff_no)
    return jsonify({"conversation": conv})


@bp.post("/agent/conversations/<int:conv_id>/messages")
@operation("Say something to the user I serve", **SERVE, body="api/service/agent_message.json", tags=TAGS,
           status=201, idempotent="replay",
           response="api/service/event.json")
def agent_message(conv_id):
    return _respond(201, desk.agent_message(g.staff_no, conv_id, g.body))


@bp.post("/agent/conversations/<int:conv_id>/transfer")
@operation("Transfer my user to another agent or to a group's queue", **SERVE, body="api/service/transfer.json",
           tags=TAGS, idempotent="replay",
           response="api/service/conversation.json")
def agent_transfer(conv_id):
    return jsonify(desk.transfer(g.staff_no, conv_id, g.body))


@bp.post("/agent/conversations/<int:conv_id>/close")
@operation("Finish serving: category and summary; my lock opens", **SERVE, body="api/service/close.json",
           tags=TAGS, idempotent="replay",
           response="api/service/conversation.json")
def agent_close(conv_id):
    return jsonify(desk.close(g.staff_no, conv_id, g.body))


@bp.post("/agent/conversations/<int:conv_id>/ticket")
@operation("This needs another department: a complaint with a ticket carrying the transcript", **SERVE,
           body="api/service/ticket.json", tags=TAGS, status=201, idempotent="replay",
           response="api/service/complaint.json")
def agent_ticket(conv_id):
    return _respond(201, complaints.ticket_from_conversation(g.principal, g.staff_no, conv_id, g.body))


@bp.get("/agent/events")
@operation("Cursor polling of my events, oldest first (fallback for the live stream)", **SERVE, tags=TAGS,
           query=page_query(maximum=500, default=100), response="api/service/agent_events_page.json")
def agent_events():
    cursor, limit = page_args()
    return _feed(desk.agent_events_after(g.staff_no, cursor or 0, limit), cursor, "id")


@bp.get("/agent/stream")
@operation("My live events (Server-Sent Events; closing it counts as offline after the grace)", **SERVE, tags=TAGS,
           query=RESUME, response=False,
           content={"text/event-stream": "id/event/data frames, one per event; keep-alive comments"})
def agent_stream():
    staff_no = g.staff_no
    last = _resume()
    app = current_app._get_current_object()
    keepalive = current().seconds("heartbeat_seconds", 10)
    sub = live.subscribe(f"a:{staff_no}")
    desk.agent_connection(staff_no, True)

    def stream():
        nonlocal last
        try:
            with app.app_context():
                yield "retry: 2000\n\n"
                while True:
                    with connection():
                        for ev in desk.agent_events_after(staff_no, last):
                            last = ev["id"]
                            yield _sse(ev, last)
                    if not sub.wait(keepalive):
                        with connection():
                            desk.expire(staff_no=staff_no)
                        live.touch_node()
                        yield ": keep-alive\n\n"
        finally:
            sub.close()
            with app.app_context(), connection():
                desk.agent_connection(staff_no, False)

    return Response(stream(), mimetype="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


# --- supervisors ---------------------------------------------------------------------------------

FLOOR = {"scope": "service:read", "permission": ("service.floor.view", "service.supervise"), "allow_service": True}


@bp.get("/floor")
@operation("The real-time floor: per skill group queue length, waits, agents by state, refusals, abandonment and "
           "SLA at risk; per agent state, current conversation and handled today", **FLOOR, tags=TAGS,
           response="api/service/floor.json")
def floor():
    return jsonify(monitoring.floor())


@bp.get("/floor/stream")
@operation("The real-time floor as Server-Sent Events (event ``floor``): sent at once, then on every change",
           **FLOOR, tags=TAGS, response=False,
           content={"text/event-stream": "event ``floor`` frames (data: the floor view), sent at once and on every "
                                         "change; keep-alive comments"})
def floor_stream():
    app = current_app._get_current_object()
    refresh = monitoring.settings().refresh_seconds
    sub = live.subscribe(live.FLOOR_KEY)  # every desk event wakes the stream, whichever process wrote it

    def view():
        with connection():
            return monitoring.floor()

    def stream():
        try:
            with app.app_context():
                yield from monitoring.floor_frames(view, sub.wait, refresh)
        finally:
            sub.close()

    return Response(stream(), mimetype="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@bp.get("/stats")
@operation("Service statistics per business day and agent / skill group / channel (JSON, or CSV in UTF-8 with BOM: "
           "format=csv)", **FLOOR, tags=TAGS,
           query={"from": "first business day YYYY-MM-DD (default today)", "to": "last day, inclusive (default: from)",
                  "by": "comma list of agent, group, channel (default all)", "group": "one skill group",
                  "format": q("json | csv", enum=["json", "csv"])},
           content={"text/csv": "format=csv: UTF-8 CSV with a BOM, one row per line of items"},
           response="api/service/statistics.json")
def statistics():
    fmt = request.args.get("format", "json")
    start, end, dims, group = stats.parse_query(request.args)
    result = stats.statistics(start, end, dims, group)
    if fmt == "csv":
        return Response(stats.statistics_csv(result), content_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f"attachment; filename=service-stats-{start}-{end}.csv"})
    return jsonify(result)


@bp.get("/alerts")
@operation("Monitoring alerts, newest first (an episode: open, then recovered)", **FLOOR, tags=TAGS,
           query={"state": q("open | recovered", enum=["open", "recovered"]), **PAGE},
           response="api/service/alerts.json")
def list_alerts():
    return jsonify(monitoring.list_alerts(request.args.get("state"), query_int("limit", 50, 1, 200),
                                          query_int("cursor", None, minimum=1)))


@bp.get("/alerts/<int:alert_id>")
@operation("One monitoring alert", **FLOOR, tags=TAGS,
           response="api/service/alert.json")
def get_alert(alert_id):
    return jsonify(monitoring.alert_dict(monitoring.get_alert(alert_id)))


@bp.post("/alerts/<int:alert_id>/acknowledge")
@operation("Acknowledge an alert (once; it stays open until the value recovers)", scope="service:write",
           permission="service.alerts.manage", body="api/service/alert_ack.json", tags=TAGS, idempotent="replay",
           response="api/service/alert.json")
def acknowledge_alert(alert_id):
    return jsonify(monitoring.acknowledge(g.staff_no, alert_id, g.body.get("note")))


@bp.post("/alerts/evaluate")
@operation("Evaluate the alert thresholds now (what the minute job does): episodes opened and recovered",
           scope="service:write", permission="service.alerts.manage", allow_service=True, tags=TAGS, idempotent="replay",
           response="api/service/alert_evaluation.json")
def evaluate_alerts():
    out = monitoring.evaluate()
    out.pop("floor")
    return jsonify(out)


@bp.post("/sweep")
@operation("Apply every timeout due now and auto-assign (what the sweep job does)", scope="service:write",
           permission="service.supervise", tags=TAGS, idempotent="replay",
           response="api/service/sweep.json")
def sweep():
    out = desk.expire()
    out["assigned"] = desk.dispatch()
    return jsonify(out)


# --- complaints and other channels ---------------------------------------------------------------

@bp.get("/complaints")
@operation("Complaints, newest first", scope="service:read", tags=TAGS, query={"user_id": "one user's", **PAGE},
           response="api/service/complaints_page.json")
def list_complaints():
    cursor, limit = page_args()
    return page(*complaints.list_complaints(request.args.get("user_id"), limit, cursor))


@bp.get("/complaints/<int:complaint_id>")
@operation("One complaint with its ticket and calls", scope="service:read", tags=TAGS,
           response="api/service/complaint.json")
def get_complaint(complaint_id):
    return jsonify(complaints.get_complaint(complaint_id))


@bp.post("/calls")
@operation("Log a call-center record (recording reference); opens or updates a complaint", scope="service:write",
           body="api/service/call.json", tags=TAGS, status=201, idempotent="replay",
           also={200: "this external_ref was logged already: the same record"},
           response="api/service/call_record.json")
def log_call():
    status, out = complaints.log_call(g.principal, g.body)
    return _respond(status, out)


@bp.post("/reviews")
@operation("A review/feedback from another system; the review ruleset decides on a complaint",
           scope="service:write", body="api/service/review.json", tags=TAGS, status=201, idempotent="replay",
           also={200: "this external_ref was posted already: the same record"},
           response="api/service/review_record.json")
def post_review():
    status, out = complaints.post_review(g.principal, g.body)
    return _respond(status, out)



# --- compensation (红包赔付) ---------------------------------------------------------------------------

@bp.post("/compensations")
@operation("Pay a user a red packet (201 paid; 202 above my limit: an approval ticket decides it, see "
           "approval_ticket_id; 409 past my daily budget)",
           scope="service:write", permission="compensation.issue", body="api/service/compensation.json",
           idempotent=True, tags=TAGS, status=201,
           also={202: "above my limit: pending_approval, decided by the approval ticket (approval_ticket_id)"},
           response="api/service/compensation_record.json")
def issue_compensation():
    from app.platform import idempotency
    key = idempotency_key()
    body = dict(g.body, _staff_no=g.staff_no)  # the same key from another agent is another request
    status, result, _ = idempotency.run(g.principal["id"], key, "service.compensate", body,
                                        lambda: _issued(compensation.issue(g.principal, g.body)), status_code=201)
    status = result.pop("_status", status)
    resp = _respond(status, result)
    if status >= 400:
        resp.mimetype = "application/problem+json"
    return resp


def _issued(out):
    status, view = out
    return dict(view, _status=status)


@bp.get("/compensations/<int:comp_id>")
@operation("A compensation", scope="service:read", tags=TAGS,
           response="api/service/compensation_record.json")
def get_compensation(comp_id):
    return jsonify(compensation.get(comp_id))


@bp.get("/compensations/report")
@operation("Compensation of one day by agent and reason (JSON, or CSV with a UTF-8 BOM: format=csv)",
           scope="service:read", tags=TAGS,
           query={"date": "YYYY-MM-DD, a business day (default: today in the business time zone)",
                  "format": q("json | csv", enum=["json", "csv"])},
           content={"text/csv": "format=csv: UTF-8 CSV with a BOM"}, response="api/service/compensation_report.json")
def compensation_report():
    import re
    from app.errors import validation_failed
    day = request.args.get("date") or compensation.business_date()
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", day):
        raise validation_failed([{"pointer": "/query/date", "validator": "format", "message": "YYYY-MM-DD"}])
    if request.args.get("format") == "csv":
        return Response(compensation.report_csv(day), mimetype="text/csv",
                        headers={"Content-Disposition": f"attachment; filename=compensation-{day}.csv"})
    return jsonify(compensation.report(day))


# --- lookups and acting for the user in the shop (connector) ----------------------------------------

ACTION_PERMISSIONS = {"invoice": "order.invoice", "return": "order.return", "cancel": "order.cancel"}


def _action_route(kind):
    from app.services.service import actions

    def view():
        status, out = actions.act(kind, g.staff_no, g.principal["id"], idempotency_key(), g.body)
        return _respond(status, out)
    view.__name__ = f"action_{kind}"
    return operation(f"{actions.LABELS[kind]} for the user in the shop (checked against policy; exactly once per "
                     f"Idempotency-Key)", scope="service:write", permission=ACTION_PERMISSIONS[kind],
                     body="api/service/action.json", idempotent=True, tags=TAGS, status=201,
                     also={200: "this key's action was done already: the same record"},
                     response="api/service/action_record.json")(view)


for _kind in ("invoice", "return", "cancel"):
    bp.add_url_rule(f"/actions/{_kind}", view_func=_action_route(_kind), methods=["POST"])


@bp.get("/actions/<int:action_id>")
@operation("An action: its state, the shop's answer, attempts", scope="service:read", tags=TAGS,
           response="api/service/action_record.json")
def get_action(action_id):
    from app.services.service import actions
    return jsonify(actions.get(action_id))


@bp.get("/shop/orders/<order_no>")
@operation("Look up an order in the shop (cached briefly)", scope="service:read", tags=TAGS,
           response="api/service/shop_order.json")
def shop_order(order_no):
    from app.services.service import connectors
    return jsonify(connectors.lookup("get_order", order_no))


@bp.get("/shop/users/<user_id>/orders")
@operation("A user's recent orders in the shop (cached briefly)", scope="service:read", tags=TAGS,
           query={"limit": q("how many of the most recent", "integer", minimum=1, maximum=50, default=10)},
           response="api/service/shop_orders.json")
def shop_user_orders(user_id):
    from app.services.service import connectors
    return jsonify(items=connectors.lookup("list_orders", user_id, _limit(10, 50)))


@bp.get("/shop/users/<user_id>")
@operation("Look up a user in the shop (cached briefly)", scope="service:read", tags=TAGS,
           response="api/service/shop_user.json")
def shop_user(user_id):
    from app.services.service import connectors
    return jsonify(connectors.lookup("get_user", user_id))


@bp.get("/shop/products/<sku>")
@operation("Look up a product in the shop (cached briefly)", scope="service:read", tags=TAGS,
           response="api/service/shop_product.json")
def shop_product(sku):
    from app.services.service import connectors
    return jsonify(connectors.lookup("get_product", sku))


@bp.get("/shop/promotions")
@operation("The shop's current promotions (cached briefly)", scope="service:read", tags=TAGS,
           response="api/service/shop_promotions.json")
def shop_promotions():
    from app.services.service import connectors
    return jsonify(items=connectors.lookup("promotions"))


def _limit(default, most):
    from app.errors import validation_failed
    raw = request.args.get("limit")
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= most:
        raise validation_failed([{"pointer": "/query/limit", "validator": "range", "message": f"1-{most}"}])
    return int(raw)


@bp.get("/customers/<user_id>")
@operation("The customer view for the agent: member level and benefits, service benefits, balances, recent orders, "
           "open tickets, recent conversations (a failing part is listed in errors)", scope="service:read",
           permission="service.serve", tags=TAGS,
           response="api/service/customer.json")
def customer_view(user_id):
    from app.services.service import customer
    return jsonify(customer.view(user_id))
