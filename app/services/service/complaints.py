"""Complaints (客诉) and the other channels: every complaint has one user and ends as one ticket.

Tickets are created through ``app.services.tickets`` (routing, priority and SLA are the tickets
context's); the ticket carries the conversation's transcript reference.
"""
from app.db import transactional
from app.errors import Problem, not_found
from app.models.service import ServiceCall, ServiceComplaint, ServiceConversation, ServiceReview
from app.platform import clock, paging
from app.services.service.policy import REVIEW, current
from app.platform.timefmt import iso

SYSTEM = {"kind": "system", "id": "service", "name": "service desk", "scopes": frozenset()}


def transcript_ref(conv_id):
    return f"/v1/service/conversations/{conv_id}/transcript"


def complaint_dict(c):
    return {"id": c.id, "user_id": c.user_id, "source": c.source, "category": c.category, "summary": c.summary,
            "conversation_id": c.conversation_id, "ticket_id": c.ticket_id,
            "transcript_ref": transcript_ref(c.conversation_id) if c.conversation_id else None,
            "rule": c.rule, "policy_version": c.policy_version, "created_by": c.created_by,
            "created_at": iso(c.created_at), "updated_at": iso(c.updated_at),
            "calls": [call_dict(x) for x in ServiceCall.select().where(ServiceCall.complaint_id == c.id)
                      .order_by(ServiceCall.id)]}


def call_dict(c):
    return {"id": c.id, "external_ref": c.external_ref, "user_id": c.user_id, "staff_no": c.staff_no,
            "direction": c.direction, "started_at": iso(c.started_at), "duration_seconds": c.duration_seconds,
            "recording_ref": c.recording_ref, "summary": c.summary, "complaint_id": c.complaint_id,
            "created_at": iso(c.created_at)}


def review_dict(r):
    return {"id": r.id, "external_ref": r.external_ref, "source": r.source, "user_id": r.user_id,
            "rating": r.rating, "text": r.text, "order_no": r.order_no, "complaint_id": r.complaint_id,
            "rule": r.rule, "policy_version": r.policy_version, "created_at": iso(r.created_at)}


def get_complaint(complaint_id):
    c = ServiceComplaint.get_or_none(ServiceComplaint.id == complaint_id)
    if c is None:
        raise not_found("complaint", complaint_id)
    return complaint_dict(c)


def list_complaints(user_id=None, limit=50, cursor=None):
    """Complaints newest first (keyset on id), optionally of one user.

    Returns:
        (items, next_cursor or None).
    """
    q = ServiceComplaint.select()
    if user_id:
        q = q.where(ServiceComplaint.user_id == user_id)
    rows, nxt = paging.keyset(q, ServiceComplaint.id, cursor, limit)
    return [complaint_dict(c) for c in rows], nxt


@transactional()
def _open(principal, user_id, source, category, title, body, channel, created_by, conversation_id=None,
          rule=None, version=None, order_no=None, ticket_id=None, staff_no=None):
    """A complaint and its ticket, in one transaction (a complaint never exists without its ticket)."""
    from app.services.service import tickets_port
    now = clock.now()
    if ticket_id is None:
        tbody = {"category": category, "title": title[:300], "body": body[:20000], "user_id": user_id,
                 "channel": channel, "source": "agent" if staff_no else "system"}
        if staff_no:
            tbody["created_by"] = staff_no
        if conversation_id:
            tbody["conversation_ref"] = transcript_ref(conversation_id)
        if order_no:
            tbody["order_no"] = order_no
        ticket_id = tickets_port.open_ticket(principal, tbody)
    else:
        if tickets_port.ticket_user(ticket_id) != user_id:
            raise Problem(409, "ticket-of-another-user", "Ticket of another user",
                          f"ticket {ticket_id} belongs to another user; a complaint has exactly one user")
        existing = ServiceComplaint.get_or_none(ServiceComplaint.ticket_id == ticket_id)
        if existing is not None:
            return existing
        if conversation_id:
            tickets_port.link_conversation(ticket_id, transcript_ref(conversation_id), created_by)
    return ServiceComplaint.create(user_id=user_id, source=source, category=category, summary=body[:5000],
                                   conversation_id=conversation_id, ticket_id=ticket_id, policy_version=version,
                                   rule=rule, created_by=created_by, created_at=now, updated_at=now)


def open_for_conversation(conv, category, summary, by, now=None, principal=None, staff_no=None, ticket_id=None):
    """The conversation becomes a complaint with its ticket (or is linked to an existing ticket)."""
    if conv.complaint_id:
        c = ServiceComplaint.get_by_id(conv.complaint_id)
        return complaint_dict(c)
    c = _open(principal or SYSTEM, conv.user_id, "chat", category, f"在线客服会话 #{conv.id}：{category}",
              summary or conv.topic or category, "chat", by, conversation_id=conv.id, ticket_id=ticket_id,
              staff_no=staff_no)
    ServiceConversation.update(complaint_id=c.id, ticket_id=c.ticket_id).where(ServiceConversation.id == conv.id).execute()
    conv.complaint_id, conv.ticket_id = c.id, c.ticket_id
    return complaint_dict(c)


def ticket_from_conversation(principal, staff_no, conv_id, body):
    """An agent sends the conversation to another department: a complaint with a new (or linked) ticket."""
    from app.models.service import ServiceConversation as SC
    from app.services.service import desk, live

    @transactional()
    def attempt():
        conv = desk._locked(SC.select().where(SC.id == conv_id)).first()
        if conv is None:
            raise not_found("conversation", conv_id)
        if conv.agent != staff_no and conv.closed_by != staff_no:
            raise Problem(409, "not-your-conversation", "Not your conversation",
                          f"conversation {conv_id} is not (or was not) served by {staff_no}")
        c = open_for_conversation(conv, body["category"], body.get("summary", ""), staff_no, principal=principal,
                                  staff_no=staff_no, ticket_id=body.get("ticket_id"))
        ev = live.append(conv, "ticket", "system", {"text": f"已为您创建工单 #{c['ticket_id']}，后续进展会通知您",
                                                   "ticket_id": c["ticket_id"], "complaint_id": c["id"]})
        return c, ev

    c, ev = attempt()
    live.publish([ev])
    return c


def log_call(principal, body):
    """Log a call-center record (with its recording reference); it opens or updates a complaint.

    Idempotent on ``external_ref``: the same call logged twice is the same record.

    Returns:
        (status, call dict with its complaint).
    """
    from app.platform.auth import actor
    from app.services.service import tickets_port
    old = ServiceCall.get_or_none(ServiceCall.external_ref == body["external_ref"])
    if old is not None:
        return 200, dict(call_dict(old), complaint=get_complaint(old.complaint_id) if old.complaint_id else None)
    by = actor(principal)
    started_at = _naive(body["started_at"])

    @transactional()
    def attempt():
        complaint_id = body.get("complaint_id")
        if complaint_id is not None:
            comp = ServiceComplaint.get_or_none(ServiceComplaint.id == complaint_id)
            if comp is None:
                raise not_found("complaint", complaint_id)
            if comp.user_id != body["user_id"]:
                raise Problem(409, "complaint-of-another-user", "Complaint of another user",
                              "a complaint belongs to exactly one user")
            ServiceComplaint.update(updated_at=clock.now()).where(ServiceComplaint.id == comp.id).execute()
            if principal.get("staff_no"):  # a note on the ticket is written by a person, never by a body field
                tickets_port.note(principal, comp.ticket_id,
                                  f"电话记录 {body['external_ref']}：{body.get('summary', '')}（录音 {body.get('recording_ref')}）")
        elif body.get("open_complaint"):
            comp = _open(principal, body["user_id"], "call", body.get("category", "投诉"),
                         f"电话客诉 {body['external_ref']}", body.get("summary") or "电话客诉", "phone",
                         body.get("staff_no") or by, staff_no=body.get("staff_no"), order_no=body.get("order_no"))
            complaint_id = comp.id
        call = ServiceCall.create(external_ref=body["external_ref"], user_id=body["user_id"],
                                  staff_no=body.get("staff_no"), direction=body.get("direction", "inbound"),
                                  started_at=started_at, duration_seconds=body["duration_seconds"],
                                  recording_ref=body.get("recording_ref"), summary=body.get("summary", ""),
                                  complaint_id=complaint_id, created_by=by, created_at=clock.now())
        return call

    call = attempt()
    return 201, dict(call_dict(call), complaint=get_complaint(call.complaint_id) if call.complaint_id else None)


def _naive(text):
    import datetime as dt
    from app.errors import validation_failed
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise validation_failed([{"pointer": "/started_at", "validator": "format",
                                  "message": "not a valid ISO 8601 date-time"}]) from None
    if value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return value


def post_review(principal, body):
    """A review or feedback from another system; the ``service_review`` ruleset decides whether it opens a complaint.

    Idempotent on ``external_ref``. Returns (status, review dict with the complaint, if any).
    """
    from app import engine
    from app.platform.auth import actor
    from app.policy import decisions
    from app.services.service import desk
    old = ServiceReview.get_or_none(ServiceReview.external_ref == body["external_ref"])
    if old is not None:
        return 200, dict(review_dict(old), complaint=get_complaint(old.complaint_id) if old.complaint_id else None)
    cfg = current()
    user, benefit = desk._user_facts(body)
    facts = {"rating": body["rating"], "text": body.get("text", ""), "source": body.get("source", "app"),
             "user": user, "benefit": benefit, "order_no": body.get("order_no")}
    ev = engine.evaluate(REVIEW, facts)
    opens = [a for a in ev.actions() if a["action"] == "open_complaint"]
    by = actor(principal)

    @transactional()
    def attempt():
        complaint_id = None
        if opens:
            comp = _open(principal, body["user_id"], "review", opens[0]["category"],
                         f"评价自动客诉（{body['rating']} 星）{body['external_ref']}",
                         body.get("text") or f"{body['rating']} 星评价", "review", by, rule=ev.rule,
                         version=ev.version, order_no=body.get("order_no"))
            complaint_id = comp.id
        r = ServiceReview.create(external_ref=body["external_ref"], source=body.get("source", "app"),
                                 user_id=body["user_id"], rating=body["rating"], text=body.get("text", ""),
                                 order_no=body.get("order_no"), complaint_id=complaint_id, rule=ev.rule,
                                 policy_version=cfg.version, created_at=clock.now())
        decisions.record(REVIEW, ev.version, ev.rule, f"service:review:{r.id}", facts,
                         {"open_complaint": bool(opens), "complaint_id": complaint_id})
        return r

    r = attempt()
    return 201, dict(review_dict(r), complaint=get_complaint(r.complaint_id) if r.complaint_id else None)

