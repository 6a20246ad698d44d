"""Ticket operations: reads, create with routing, workflow transitions and approvals, assignment, comments."""
import datetime as dt
import json

import peewee as pw

from app.platform import clock, paging
from app.db import db, for_update, transactional
from app.errors import Problem, not_found

from app.models.staff import Staff
from app.models.tickets import (Ticket, TicketActionRun, TicketApproval, TicketAttachment, TicketComment,
                                TicketEvent, TicketNotice)
from app.platform import idempotency, outbox
from app.platform.auth import actor as actor_of
from app.services.tickets import ledger_port, membership_port
from app.services.tickets import policy as tickets_policy, routing as tickets_routing, sla as tickets_sla
from app.platform import sql as fastsql
from app.services.tickets.policy import PRIORITIES
from app.platform.timefmt import iso


def _dumps(value):
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)



# --- reading --------------------------------------------------------------------------------------

def serialize(t, cfg=None, detail=False):
    """A ticket as JSON (``detail`` adds the allowed transitions and the routing inputs)."""
    cfg = cfg or tickets_policy.current()
    st = cfg.state(t.workflow, t.state)
    out = {
        "id": t.id, "category": t.category, "workflow": t.workflow, "state": t.state,
        "state_label": st.get("label"), "user_status": st.get("user_status"), "terminal": t.terminal,
        "title": t.title, "body": t.body, "channel": t.channel, "source": t.source,
        "user": {"id": t.user_id, "level": t.user_level, "paid": t.user_paid},
        "order_no": t.order_no, "order_status": t.order_status, "amount_fen": t.amount_fen,
        "conversation_ref": t.conversation_ref, "department": t.department, "queue": t.queue,
        "priority": t.priority, "assignee": t.assignee, "tags": json.loads(t.tags),
        "created_by": t.created_by, "created_at": iso(t.created_at), "updated_at": iso(t.updated_at),
        "resolved_at": iso(t.resolved_at), "closed_at": iso(t.closed_at),
        "routing": {"rule": t.routing_rule, "priority_rule": t.priority_rule, "policy_version": t.policy_version},
        "sla": tickets_sla.describe(t),
    }
    if detail:
        out["allowed_transitions"] = allowed_transitions(cfg, t)
        out["routing"]["inputs"] = json.loads(t.facts)
    return out


def get_ticket(ticket_id):
    t = Ticket.get_or_none(Ticket.id == ticket_id)
    if t is None:
        raise not_found("ticket", ticket_id)
    return t


def get(ticket_id):
    """One ticket with its allowed transitions."""
    return serialize(get_ticket(ticket_id), detail=True)


LIST_FILTERS = {"status": Ticket.state, "category": Ticket.category, "department": Ticket.department,
                "priority": Ticket.priority, "assignee": Ticket.assignee, "sla": Ticket.sla_state,
                "user_id": Ticket.user_id, "channel": Ticket.channel, "queue": Ticket.queue}


def list_tickets(filters, cursor=None, limit=50):
    """Tickets newest first, filtered by equality on LIST_FILTERS keys (plus ``open``: true/false).

    Returns:
        {"items": [...], "next_cursor": str | None}.
    """
    q = Ticket.select()
    for name, value in filters.items():
        if name == "open":
            q = q.where(Ticket.terminal == (value not in ("true", "1", True)))
        elif name == "sla" and value is not None:
            q = q.where(tickets_sla.state_expr() == value)  # from the clock, as each ticket reads it
        elif value is not None:
            q = q.where(LIST_FILTERS[name] == value)
    rows, nxt = paging.keyset(q, Ticket.id, cursor, limit)
    cfg = tickets_policy.current()
    return {"items": [serialize(t, cfg) for t in rows], "next_cursor": None if nxt is None else str(nxt)}


def history(ticket_id):
    """Every change to a ticket, oldest first: who, when, what (field from -> to), policy version and rule."""
    get_ticket(ticket_id)
    return [{"id": e.id, "at": iso(e.at), "actor": e.actor, "kind": e.kind, "field": e.field,
             "from": e.from_value, "to": e.to_value, "detail": json.loads(e.detail) if e.detail else None,
             "policy_version": e.policy_version, "rule": e.rule}
            for e in TicketEvent.select().where(TicketEvent.ticket == ticket_id).order_by(TicketEvent.id)]


def comments(ticket_id, visibility=None):
    get_ticket(ticket_id)
    q = TicketComment.select().where(TicketComment.ticket == ticket_id).order_by(TicketComment.id)
    if visibility:
        q = q.where(TicketComment.visibility == visibility)
    return [_comment_dict(c) for c in q]


def _comment_dict(c):
    return {"id": c.id, "at": iso(c.at), "author": c.author, "author_kind": c.author_kind,
            "visibility": c.visibility, "body": c.body}


def attachments(ticket_id):
    get_ticket(ticket_id)
    return [_attachment_dict(a) for a in
            TicketAttachment.select().where(TicketAttachment.ticket == ticket_id).order_by(TicketAttachment.id)]


def _attachment_dict(a):
    return {"id": a.id, "at": iso(a.at), "ref": a.ref, "name": a.name, "content_type": a.content_type,
            "size_bytes": a.size_bytes, "added_by": a.added_by}


def approvals(ticket_id):
    get_ticket(ticket_id)
    return [{"id": a.id, "at": iso(a.at), "step": a.step, "level": a.level, "decision": a.decision,
             "by": a.by, "comment": a.comment, "policy_version": a.policy_version}
            for a in TicketApproval.select().where(TicketApproval.ticket == ticket_id).order_by(TicketApproval.id)]


def awaiting_approval(levels=None, limit=100):
    """Open tickets whose state has an approval step (of ``levels``, when given), oldest first: the approvals inbox.

    Returns:
        [{"ticket": serialize(t), "levels": [1, 2, ...]}].
    """
    cfg = tickets_policy.current()
    wanted = {}  # (workflow, state) -> approval levels there
    for wf_name, wf in cfg.tickets["workflows"].items():
        for state in wf["states"]:
            lv = sorted({tr["approval"]["level"] for tr in cfg.transitions_from(wf_name, state) if tr.get("approval")})
            lv = [x for x in lv if levels is None or x in levels]
            if lv:
                wanted[(wf_name, state)] = lv
    if not wanted:
        return []
    cond = None
    for wf_name, state in wanted:
        c = (Ticket.workflow == wf_name) & (Ticket.state == state)
        cond = c if cond is None else (cond | c)
    rows = Ticket.select().where(cond & (Ticket.terminal == False)).order_by(Ticket.id).limit(limit)  # noqa: E712
    return [{"ticket": serialize(t, cfg), "levels": wanted[(t.workflow, t.state)]} for t in rows]


def user_view(ticket_id, user_id=None):
    """What the user may see: status in their words, public comments, notices, no internal detail."""
    t = get_ticket(ticket_id)
    if user_id is not None and t.user_id != user_id:
        raise not_found("ticket", ticket_id)
    cfg = tickets_policy.current()
    st = cfg.state(t.workflow, t.state)
    return {
        "id": t.id, "category": t.category, "title": t.title, "status": st.get("user_status"),
        "closed": t.terminal, "created_at": iso(t.created_at), "updated_at": iso(t.updated_at),
        "resolved_at": iso(t.resolved_at),
        "replies": [_comment_dict(c) for c in TicketComment.select().where(
            (TicketComment.ticket == t.id) & (TicketComment.visibility == "public")).order_by(TicketComment.id)],
        "notices": [{"at": iso(n.at), "kind": n.kind, "text": n.text} for n in TicketNotice.select().where(
            TicketNotice.ticket == t.id).order_by(TicketNotice.id)],
    }


def notices(user_id, limit=50, cursor=None):
    """User-facing notices of one user, newest first (keyset on id), for the app to show.

    Returns:
        (items, next_cursor or None).
    """
    rows, nxt = paging.keyset(TicketNotice.select().where(TicketNotice.user_id == user_id), TicketNotice.id,
                              cursor, limit)
    return [{"id": n.id, "ticket_id": n.ticket_id, "at": iso(n.at), "kind": n.kind, "text": n.text}
            for n in rows], nxt


# --- writing helpers --------------------------------------------------------------------------------

class _Pending:
    """Rows one create writes, gathered so each table gets a single multi-row INSERT at the end."""
    __slots__ = ("events", "notices", "runs", "messages")

    def __init__(self):
        self.events, self.notices, self.runs, self.messages = [], [], [], []

    def flush(self):
        fastsql.insert(TicketEvent, self.events)
        fastsql.insert(TicketNotice, self.notices)
        fastsql.insert(TicketActionRun, self.runs)
        outbox.publish_many(self.messages)


def _event_row(t, actor, kind, field=None, before=None, after=None, detail=None, version=None, rule=None, now=None):
    return {"ticket": t.id, "at": now or clock.now(), "actor": actor, "kind": kind, "field": field,
            "from_value": None if before is None else str(before), "to_value": None if after is None else str(after),
            "detail": _dumps(detail) if detail else None, "policy_version": version, "rule": rule}


def _event(t, actor, kind, field=None, before=None, after=None, detail=None, version=None, rule=None, now=None,
           pending=None):
    row = _event_row(t, actor, kind, field, before, after, detail, version, rule, now)
    if pending is not None:
        pending.events.append(row)
        return None
    return TicketEvent.create(**row)


def link_conversation(ticket_id, conversation_ref, actor):
    """An existing ticket takes on a conversation (service desk): it carries the transcript reference from now on.

    A ticket that already carries another conversation keeps it; the link is in its history either way.
    """
    t = get_ticket(ticket_id)
    before = t.conversation_ref
    if before is None:
        Ticket.update(conversation_ref=conversation_ref, updated_at=clock.now()).where(
            (Ticket.id == t.id) & Ticket.conversation_ref.is_null()).execute()
    _event(t, actor, "conversation_linked", "conversation_ref", before, conversation_ref)


def _ticket_payload(t, cfg):
    st = cfg.state(t.workflow, t.state)
    return {"ticket_id": t.id, "category": t.category, "state": t.state, "user_status": st.get("user_status"),
            "department": t.department, "queue": t.queue, "priority": t.priority, "assignee": t.assignee,
            "user_id": t.user_id, "policy_version": cfg.version}


def _notice(t, kind, text, now, pending=None):
    row = {"ticket": t.id, "user_id": t.user_id, "at": now, "kind": kind, "text": text}
    if pending is not None:
        pending.notices.append(row)
    else:
        TicketNotice.create(**row)


def _staff(staff_no, what="staff"):
    s = Staff.get_or_none(Staff.staff_no == staff_no)
    if s is None or not s.active:
        raise Problem(422, "unknown-staff", "Unknown staff member",
                      f"{what} {staff_no!r} is not an active staff member")
    return s


def _facts(t):
    facts = json.loads(t.facts)
    facts.update({"priority": t.priority, "department": t.department, "queue": t.queue,
                  "tags": json.loads(t.tags), "state": t.state, "assignee": t.assignee})
    return facts


def _least_loaded(role, department):
    """The active staff member with ``role`` in ``department`` holding the fewest open tickets."""
    candidates = [s.staff_no for s in Staff.select(Staff.staff_no).where(
        (Staff.department == department) & (Staff.active == True)  # noqa: E712
        & Staff.roles.contains(f" {role} ")).order_by(Staff.staff_no).limit(200)]
    if not candidates:
        return None
    load = dict(Ticket.select(Ticket.assignee, pw.fn.COUNT(Ticket.id))
                .where(Ticket.assignee.in_(candidates) & (Ticket.terminal == False))  # noqa: E712
                .group_by(Ticket.assignee).tuples())
    return min(candidates, key=lambda s: (load.get(s, 0), s))


def run_actions(cfg, t, actions, trigger, actor, now, pending=None, by=None, staff_no=None):
    """Run auto actions once each: (ticket, trigger:index) is unique, so a retry or replay is a no-op.

    A ``compensate`` action runs once per ticket, state and asset, whatever the trigger (re-entering the
    compensating state pays nothing more). ``by`` names who caused the actions (journals of payments).

    Actions: notify {to, text}, assign {role, department, unassign}, set_priority {priority}, add_tag {tag},
    compensate {asset, amount_fen, expires_days} (a ledger grant, itself idempotent on the same key).
    With ``pending`` (a ticket created in this transaction: no run can exist yet) the rows are gathered
    for one multi-row INSERT instead of a savepoint, an INSERT and an UPDATE per action.
    """
    for i, act in enumerate(actions):
        if act["action"] == "compensate":
            # money: once per ticket and rule (the state's on_enter, per asset), however often the ticket
            # re-enters the state or by whichever path
            key = f"compensate:{t.workflow}.{t.state}:{act['asset']}"
        else:
            key = f"{trigger}:{i}:{act['action']}"
        run_one = _ACTIONS.get(act["action"], _act_external)
        params = dict(act, _key=key.replace(":", "-"), _by=by, _staff_no=staff_no)
        if pending is not None:
            result = run_one(cfg, t, params, actor, now, pending=pending)
            pending.runs.append({"ticket": t.id, "key": key, "action": act["action"], "params": _dumps(act),
                                 "result": _dumps(result), "at": now})
            continue
        try:
            with db.atomic():
                run = TicketActionRun.create(ticket=t.id, key=key, action=act["action"], params=_dumps(act), at=now)
        except pw.IntegrityError:
            continue
        result = run_one(cfg, t, params, actor, now)
        TicketActionRun.update(result=_dumps(result)).where(TicketActionRun.id == run.id).execute()


def _act_notify(cfg, t, act, actor, now, pending=None):
    sent = []
    text = act.get("text") or f"工单状态：{cfg.state(t.workflow, t.state).get('user_status')}"
    for target in act.get("to", ["user"]):
        payload = dict(_ticket_payload(t, cfg), target=target, text=text)
        if target == "user":
            _notice(t, "notice", text, now, pending)
        if pending is not None:
            pending.messages.append((f"ticket.notify.{target}", payload, f"ticket:{t.id}", None))
        else:
            outbox.publish(f"ticket.notify.{target}", payload, subject=f"ticket:{t.id}")
        sent.append(target)
    return {"sent": sent}


def _act_assign(cfg, t, act, actor, now, pending=None):
    if act.get("unassign"):
        before, t.assignee = t.assignee, None
        _event(t, actor, "assigned", "assignee", before, None, version=cfg.version, rule="auto:assign", now=now,
               pending=pending)
        return {"assignee": None}
    department = act.get("department") or t.department
    who = _least_loaded(act["role"], department)
    if who is None:
        return {"assignee": None, "reason": f"no active {act['role']} in {department}"}
    if department != t.department:
        _event(t, actor, "routed", "department", t.department, department, version=cfg.version,
               rule="auto:assign", now=now, pending=pending)
        t.department = department
    before, t.assignee = t.assignee, who
    _event(t, actor, "assigned", "assignee", before, who, version=cfg.version, rule="auto:assign", now=now,
           pending=pending)
    return {"assignee": who}


def _act_set_priority(cfg, t, act, actor, now, pending=None):
    before, t.priority = t.priority, act["priority"]
    if before != t.priority:
        tickets_sla.priority_changed(cfg, t, now)  # the new priority's targets, from now
    _event(t, actor, "priority", "priority", before, t.priority, version=cfg.version, rule="auto:set_priority",
           now=now, pending=pending)
    return {"priority": t.priority}


def _act_add_tag(cfg, t, act, actor, now, pending=None):
    tags = json.loads(t.tags)
    if act["tag"] not in tags:
        tags.append(act["tag"])
        t.tags = _dumps(tags)
    return {"tags": tags}


def _act_compensate(cfg, t, act, actor, now, pending=None):
    """Pay the user through the ledger (a lot of red packets/vouchers), exactly once per trigger."""
    amount = act["amount_fen"]
    expires = iso(now + dt.timedelta(days=act["expires_days"])) if act.get("expires_days") else None
    journal, lot = ledger_port.compensate(t.user_id, act["asset"], amount, expires, f"ticket:{t.id}",
                                          f"ticket-{t.id}-{act['_key']}", actor=act.get("_by") or "system:tickets")
    _event(t, actor, "compensated", "compensation", None, f"{act['asset']} {amount}",
           detail={"journal_id": journal, "lot_id": lot},
           version=cfg.version, rule=f"{t.workflow}.{t.state}.on_enter", now=now, pending=pending)
    tickets_routing.log_decision("tickets", cfg.version, f"{t.workflow}.{t.state}.on_enter", f"ticket:{t.id}",
                                 {"category": t.category, "state": t.state, "user_id": t.user_id},
                                 {"action": "compensate", "asset": act["asset"], "amount_fen": amount,
                                  "journal_id": journal})
    return {"journal_id": journal, "amount_fen": amount, "asset": act["asset"]}


_ACTIONS = {"notify": _act_notify, "assign": _act_assign, "set_priority": _act_set_priority,
            "add_tag": _act_add_tag, "compensate": _act_compensate}

# Auto actions another context provides (e.g. the service context settles a red packet held for this ticket's
# approval): name -> (function, permission the person taking the transition needs). Filled by register_action
# from that context's register() (explicit wiring; nothing registers itself on import).
_EXTERNAL = {}


def register_action(name, fn, permission=None):
    """Let a workflow state's ``on_enter`` run ``fn`` of another context, once per ticket and entry.

    Args:
        name: the action name the tickets policy uses (schemas/policies/tickets.json lists it).
        fn: ``fn(ticket_id=, staff_no=, actor=, policy_version=, rule=, now=)`` -> JSON-able result; runs in
            the transition's transaction (a Problem it raises refuses the whole transition).
        permission: a permission the person taking a transition into such a state must hold.
    """
    _EXTERNAL[name] = (fn, permission)


def _act_external(cfg, t, act, actor, now, pending=None):
    entry = _EXTERNAL.get(act["action"])
    if entry is None:
        raise Problem(503, "action-unavailable", "Action unavailable",
                      f"no context provides the ticket action {act['action']!r}")
    rule = f"{t.workflow}.{t.state}.on_enter"
    result = entry[0](ticket_id=t.id, staff_no=act.get("_staff_no"), actor=act.get("_by") or actor,
                      policy_version=cfg.version, rule=rule, now=now)
    _event(t, actor, "action", None, None, act["action"], detail=result, version=cfg.version, rule=rule, now=now,
           pending=pending)
    return result


# --- create ---------------------------------------------------------------------------------------

def _user_facts(body, known=False, found=None):
    """User facts: membership's when it knows the member, else what the caller sent.

    ``known``: the caller (the simulation) passes membership's facts as ``found`` instead of a lookup.
    """
    user = dict(body.get("user") or {})
    out = {"level": user.get("level"), "paid": bool(user.get("paid", False)), "source": "request"}
    if not known:
        found = membership_port.user_facts(body["user_id"])
    if found:
        out.update({"level": found["level"], "paid": found["paid"], "source": "membership"})
        if found.get("plan"):
            out["plan"] = found["plan"]
    return out


def facts_of(body, known=False, member=None):
    """The facts routing, priority and workflow guards see for a create request.

    The simulation passes ``known=True`` and the member's facts (``{"level", "paid", "plan"}`` or None) from
    its own state; the live path looks them up in membership.
    """
    title, text_body = body["title"], body.get("body", "")
    return {"category": body["category"], "title": title, "body": text_body, "text": f"{title}\n{text_body}",
            "channel": body.get("channel", "api"), "source": body.get("source", "system"),
            "amount_fen": body.get("amount_fen", 0), "order_status": body.get("order_status"),
            "user": _user_facts(body, known, member), "tags": list(body.get("tags") or [])}


def route(cfg, body, facts):
    """Routing and priority decided for a new ticket (rules), checked against the known departments."""
    cfg.category(body["category"])
    decision = tickets_routing.decide(facts, cfg.tickets["default_priority"])
    if decision["department"] not in cfg.departments():
        raise Problem(503, "routing-failed", "Routing failed",
                      f"no routing rule sent the ticket to a known department (got {decision['department']!r})")
    return decision


def new_ticket(cfg, body, facts, decision, now, created_by):
    """The ticket a create makes (not yet stored): state, routing, escalated priority, SLA clocks started.

    The live create stores it; the simulation reads its department, priority and SLA deadlines.
    """
    cat = cfg.category(body["category"])
    wf = cfg.workflow(cat["workflow"])
    priority = decision["priority"]
    for _ in range(decision["escalate"]):
        priority = PRIORITIES[max(0, PRIORITIES.index(priority) - 1)]
    tags = list(dict.fromkeys(list(body.get("tags") or []) + decision["tags"]))
    user = facts["user"]
    t = Ticket(category=body["category"], workflow=cat["workflow"], state=wf["initial"], state_entered_at=now,
               terminal=False, title=body["title"], body=body.get("body", ""), channel=facts["channel"],
               source=facts["source"], conversation_ref=body.get("conversation_ref"),
               order_no=body.get("order_no"), order_status=body.get("order_status"),
               amount_fen=body.get("amount_fen"), user_id=body["user_id"], user_level=user["level"],
               user_paid=user["paid"], department=decision["department"], queue=decision["queue"],
               priority=priority, assignee=None, tags=_dumps(tags), created_by=created_by,
               created_at=now, updated_at=now, policy_version=cfg.version,
               routing_rule=decision["ticket_routing_rule"], priority_rule=decision["ticket_priority_rule"],
               facts=_dumps(facts))
    tickets_sla.start(cfg, t, now)
    return t


def create(principal, body, key):
    """Create a ticket, routed and prioritised by rules; idempotent on (caller, Idempotency-Key).

    Args:
        principal: the authenticated caller.
        body: validated create body (schemas/api/tickets/create.json).
        key: Idempotency-Key.

    Returns:
        (status, ticket dict, replayed).
    """
    def decide():
        # Rules run before the write transaction: on SQLite it holds the single write lock.
        cfg = tickets_policy.current()
        facts = facts_of(body)
        return cfg, facts, route(cfg, body, facts)

    return idempotency.run(_client(principal), key, "tickets.create", body,
                           lambda decided: _create(principal, body, *decided), 201, prepare=decide)


def creator_of(principal):
    """The staff number when a person creates the ticket (session or act-as), else None (a service)."""
    return (principal or {}).get("staff_no")


def _create(principal, body, cfg, facts, decision):
    caller = actor_of(principal)
    cat = cfg.category(body["category"])
    wf = cfg.workflow(cat["workflow"])
    now = clock.now()
    creator = creator_of(principal)
    t = new_ticket(cfg, body, facts, decision, now, creator or caller)
    t.id = fastsql.insert_one(Ticket, {k: v for k, v in t.__data__.items() if k != "id"})
    written = dict(t.__data__)
    actor = creator or caller
    pending = _Pending()
    pending.events.append(_event_row(t, actor, "created", "state", None, t.state,
                                     {"category": t.category, "source": t.source}, cfg.version, None, now))
    for ruleset, version, rule, actions in decision["decisions"]:
        field = "department" if ruleset == "ticket_routing" else "priority"
        value = f"{t.department}/{t.queue}" if field == "department" else t.priority
        pending.events.append(_event_row(t, "system:rules", "routed" if field == "department" else "priority",
                                         field, None, value, {"ruleset": ruleset, "actions": actions}, version,
                                         rule, now))
    for ruleset, version, rule, actions in decision["decisions"]:
        tickets_routing.log_decision(ruleset, version, rule, f"ticket:{t.id}", facts,
                                     {"actions": actions, "department": t.department, "queue": t.queue,
                                      "priority": t.priority})
    for att in body.get("attachments") or []:
        TicketAttachment.create(ticket=t.id, at=now, ref=att["ref"], name=att.get("name") or att["ref"][-300:],
                                content_type=att.get("content_type"), size_bytes=att.get("size_bytes"),
                                added_by=actor)
    initial = wf["states"][wf["initial"]]
    _notice(t, "created", f"工单已创建：{initial.get('user_status')}", now, pending)
    run_actions(cfg, t, decision["notify"], "routing", "system:rules", now, pending)
    run_actions(cfg, t, initial.get("on_enter") or [], f"enter:{wf['initial']}:0", "system:workflow", now, pending)
    changed = {Ticket._meta.fields[k]: v for k, v in t.__data__.items() if written.get(k) != v}
    if changed:  # an auto action (assign, set_priority, add_tag) changed the row just written
        Ticket.update(changed).where(Ticket.id == t.id).execute()
    pending.messages.append(("ticket.created", _ticket_payload(t, cfg), f"ticket:{t.id}", None))
    pending.flush()
    return serialize(t, cfg)


# --- workflow -------------------------------------------------------------------------------------

def _guard_ok(tr, t, now):
    if tr.get("when") and not tickets_policy.matches(tr["when"], _facts(t)):
        return False
    if tr.get("within_hours") and now - t.state_entered_at > dt.timedelta(hours=tr["within_hours"]):
        return False
    return True


def allowed_transitions(cfg, t, now=None):
    """Names of the transitions open from the ticket's state right now (guards and windows applied)."""
    now = now or clock.now()
    if t.workflow not in cfg.tickets["workflows"]:
        return []
    return [tr["name"] for tr in cfg.transitions_from(t.workflow, t.state) if _guard_ok(tr, t, now)]


def _not_allowed(cfg, t, name, now, why=None):
    allowed = allowed_transitions(cfg, t, now)
    detail = why or f"transition {name!r} is not allowed from state {t.state!r}"
    return Problem(409, "transition-not-allowed", "Transition not allowed",
                   f"{detail}; allowed: {', '.join(allowed) or 'none'}", state=t.state, transition=name,
                   allowed=allowed)


def _person(principal):
    """The acting staff member (session, or act-as) as a Staff row, or None for a service acting as itself."""
    staff_no = (principal or {}).get("staff_no")
    return _staff(staff_no, "acting staff member") if staff_no else None


def _staff_required(what):
    from app.platform.auth import ACT_AS_HEADER
    return Problem(403, "staff-required", "Staff identity required",
                   f"{what} is taken by a person: sign in, or send {ACT_AS_HEADER} with an act-as key")


def _check_actor(cfg, t, tr, principal):
    """The staff member taking a transition (from the caller's identity), checked against the transition's
    roles, department and the permissions it needs; None when a service takes an open step itself."""
    from app.platform import auth
    s = _person(principal)
    entering = cfg.state(t.workflow, tr["to"])
    pays = any(a.get("action") == "compensate" for a in entering.get("on_enter") or ())
    extra = [_EXTERNAL[a["action"]][1] for a in entering.get("on_enter") or ()
             if a.get("action") in _EXTERNAL and _EXTERNAL[a["action"]][1]]
    if s is None:
        if tr.get("roles") or tr.get("same_department") or tr.get("approval"):
            raise _staff_required(f"transition {tr['name']!r}")
        return None
    needed = [f"ticket.approve.l{tr['approval']['level']}"] if tr.get("approval") else ["ticket.transition"]
    if pays:
        needed.append("compensation.issue")
    needed += [p for p in extra if p not in needed]
    for permission in needed:
        auth.require_permission(principal, permission)
    if tr.get("roles") and not set(tr["roles"]) & set(s.role_list):
        raise Problem(403, "role-not-allowed", "Role not allowed",
                      f"{s.staff_no} (roles {', '.join(s.role_list)}) may not take {tr['name']!r}; "
                      f"needs one of {', '.join(tr['roles'])}", required_roles=tr["roles"])
    if tr.get("same_department") and s.department != t.department:
        raise Problem(403, "department-not-allowed", "Department not allowed",
                      f"{s.staff_no} is in {s.department!r}; {tr['name']!r} belongs to {t.department!r}")
    return s


def _lock(ticket_id):
    t = for_update(Ticket.select().where(Ticket.id == ticket_id)).first()
    if t is None:
        raise not_found("ticket", ticket_id)
    return t


def _via(principal):
    """The credential, when a service acts for a person (recorded next to the person in the history)."""
    from app.platform import auth
    if principal and principal.get("staff_no") and principal.get("kind") != "staff":
        return auth.actor(principal)
    return None


def _apply_transition(cfg, t, tr, staff, comment, now, principal):
    from app.platform import audit, auth
    wf = cfg.workflow(t.workflow)
    caller = auth.actor(principal)
    credential = auth.credential(principal)
    if tr.get("requires_comment") and not (comment or "").strip():
        raise Problem(422, "comment-required", "Comment required", f"transition {tr['name']!r} needs a comment")
    actor = staff.staff_no if staff else caller
    approval = tr.get("approval")
    if approval:
        if wf.get("distinct_approvers") and approval["decision"] == "approve" and TicketApproval.select().where(
                (TicketApproval.ticket == t.id) & (TicketApproval.decision == "approve")
                & (TicketApproval.at >= t.created_at) & (TicketApproval.level < approval["level"])
                & ((TicketApproval.by == staff.staff_no) | (TicketApproval.credential == credential))).exists():
            raise Problem(403, "approver-not-distinct", "Approver must differ",
                          f"{staff.staff_no} (or the credential acting now, {credential}) already approved an "
                          "earlier level of this ticket")
        TicketApproval.create(ticket=t.id, at=now, step=t.state, level=approval["level"],
                              decision=approval["decision"], by=staff.staff_no, comment=comment,
                              policy_version=cfg.version, credential=credential)
    old_state, old_st = t.state, cfg.state(t.workflow, t.state)
    before = {"state": old_state, "assignee": t.assignee, "department": t.department}
    new_st = cfg.state(t.workflow, tr["to"])
    via = _via(principal)
    ev = _event(t, actor, "approval" if approval else "transition", "state", old_state, tr["to"],
                detail={"transition": tr["name"], "comment": comment, **({"approval": approval} if approval else {}),
                        **({"via": via} if via else {})},
                version=cfg.version, rule=f"{t.workflow}.{tr['name']}", now=now)
    t.state, t.state_entered_at, t.updated_at = tr["to"], now, now
    t.terminal = bool(new_st.get("terminal"))
    if staff is not None:
        tickets_sla.responded(t, now)
    if old_st.get("pending_on_user") and not new_st.get("pending_on_user"):
        tickets_sla.resume(cfg, t, now)
    if new_st.get("pending_on_user") and not old_st.get("pending_on_user"):
        tickets_sla.pause(t, now)
    if new_st.get("resolves") or new_st.get("terminal"):
        tickets_sla.resolved(cfg, t, now)
    elif old_st.get("resolves") and t.resolved_at is not None:
        tickets_sla.reopened(cfg, t, now)
    if t.terminal:
        t.closed_at = now
        tickets_sla.stopped(t)
    if comment:
        TicketComment.create(ticket=t.id, at=now, author=actor, author_kind="staff" if staff else "system",
                             visibility="internal", body=comment)
    if old_st.get("user_status") != new_st.get("user_status"):
        _notice(t, "status", f"工单状态更新：{new_st.get('user_status')}", now)
    run_actions(cfg, t, new_st.get("on_enter") or [], f"enter:{tr['to']}:{ev.id}", "system:workflow", now,
                by=caller, staff_no=staff.staff_no if staff else None)
    t.save()
    audit.record(caller, "ticket.approval" if approval else "ticket.transition", f"ticket:{t.id}", before=before,
                 after={"state": t.state, "assignee": t.assignee, "department": t.department},
                 policy_version=cfg.version, transition=tr["name"],
                 **({"approval": approval} if approval else {}))
    outbox.publish("ticket.transitioned", dict(_ticket_payload(t, cfg), transition=tr["name"], from_state=old_state,
                                               by=actor), subject=f"ticket:{t.id}", dedupe_key=f"ticket-event:{ev.id}")
    return serialize(t, cfg, detail=True)


def _client(principal):
    """Idempotency client: the credential, and the person when a key acts for one (keys are shared)."""
    if principal.get("staff_no") and principal.get("kind") != "staff":
        return f"{principal['id']}>{principal['staff_no']}"
    return principal["id"]


def transition(principal, ticket_id, body, key=None):
    """Take a named workflow transition as the caller's identity (a person, or a service on open steps).

    Args:
        principal: caller (``staff_no`` set for a staff session or an act-as key).
        ticket_id: ticket.
        body: {transition, comment?, expected_state?}.
        key: optional Idempotency-Key.

    Raises:
        Problem: 409 transition-not-allowed (naming the allowed ones), 403 role-not-allowed / forbidden /
            staff-required, 422 ...
    """
    def fn():
        now = clock.now()
        cfg = tickets_policy.current()
        t = _lock(ticket_id)
        if body.get("expected_state") and body["expected_state"] != t.state:
            raise Problem(409, "state-changed", "State changed",
                          f"ticket is in {t.state!r}, not {body['expected_state']!r}", state=t.state)
        name = body["transition"]
        candidates = [tr for tr in cfg.transitions_from(t.workflow, t.state) if tr["name"] == name]
        if not candidates:
            raise _not_allowed(cfg, t, name, now)
        tr = candidates[0]
        if not _guard_ok(tr, t, now):
            raise _not_allowed(cfg, t, name, now, f"transition {name!r} is not open for this ticket now "
                                                  "(condition or time window)")
        staff = _check_actor(cfg, t, tr, principal)
        return _apply_transition(cfg, t, tr, staff, body.get("comment"), now, principal)

    return idempotency.run(_client(principal), key, f"tickets.transition:{ticket_id}", body, fn)


def approve(principal, ticket_id, body, key=None):
    """Decide the pending approval step as the caller's identity: picks the approval transition for the
    decision whose guard holds. Distinct approvers are enforced per person and per credential.

    Args:
        body: {decision: approve|reject, comment?}.
    """
    def fn():
        now = clock.now()
        cfg = tickets_policy.current()
        t = _lock(ticket_id)
        steps = [tr for tr in cfg.transitions_from(t.workflow, t.state) if tr.get("approval")]
        if not steps:
            raise Problem(409, "no-approval-pending", "No approval pending",
                          f"state {t.state!r} has no approval step", state=t.state,
                          allowed=allowed_transitions(cfg, t, now))
        chosen = [tr for tr in steps if tr["approval"]["decision"] == body["decision"] and _guard_ok(tr, t, now)]
        if not chosen:
            raise _not_allowed(cfg, t, body["decision"], now, f"no {body['decision']!r} step is open")
        staff = _check_actor(cfg, t, chosen[0], principal)
        return _apply_transition(cfg, t, chosen[0], staff, body.get("comment"), now, principal)

    return idempotency.run(_client(principal), key, f"tickets.approve:{ticket_id}", body, fn)


@transactional()
def assign(principal, ticket_id, body):
    """Reassign a ticket to a person and/or department/queue (recorded in history and the audit log)."""
    from app.platform import audit, auth
    caller = auth.actor(principal)
    now = clock.now()
    cfg = tickets_policy.current()
    t = _lock(ticket_id)
    if t.terminal:
        raise Problem(409, "ticket-closed", "Ticket closed", "a closed ticket cannot be reassigned")
    staff = _person(principal)
    actor = staff.staff_no if staff else caller
    before = {"assignee": t.assignee, "department": t.department, "queue": t.queue}
    depts = cfg.departments()
    if "department" in body or "queue" in body:
        dept = body.get("department", t.department)
        if dept not in depts:
            raise Problem(422, "unknown-department", "Unknown department", f"no department {dept!r}",
                          allowed=sorted(depts))
        queue = body.get("queue", t.queue if dept == t.department else None)
        if queue is not None and queue not in depts[dept]["queues"]:
            raise Problem(422, "unknown-queue", "Unknown queue", f"department {dept!r} has no queue {queue!r}",
                          allowed=depts[dept]["queues"])
        if (dept, queue) != (t.department, t.queue):
            _event(t, actor, "routed", "department", f"{t.department}/{t.queue}", f"{dept}/{queue}",
                   detail={"comment": body.get("comment"), **({"via": _via(principal)} if _via(principal) else {})},
                   version=cfg.version, rule="manual", now=now)
            t.department, t.queue = dept, queue
    if "assignee" in body:
        who = body["assignee"]
        if who is not None:
            _staff(who, "assignee")
        if who != t.assignee:
            _event(t, actor, "assigned", "assignee", t.assignee, who, version=cfg.version, rule="manual", now=now)
            t.assignee = who
            if who:
                outbox.publish("ticket.assigned", _ticket_payload(t, cfg), subject=f"ticket:{t.id}")
    t.updated_at = now
    t.save()
    audit.record(caller, "ticket.assign", f"ticket:{t.id}", before=before,
                 after={"assignee": t.assignee, "department": t.department, "queue": t.queue},
                 policy_version=cfg.version)
    return serialize(t, cfg, detail=True)


@transactional()
def comment(principal, ticket_id, body):
    """Add a comment: staff internal/public (public answers the user and stops the response clock) or user.

    A staff comment is written by the caller's identity (a session or an act-as key); a user's comment is
    relayed by a service (``author_kind: user``, ``author`` = the ticket's user).
    """
    now = clock.now()
    cfg = tickets_policy.current()
    t = _lock(ticket_id)
    kind = body.get("author_kind", "staff")
    if kind == "staff":
        staff = _person(principal)
        if staff is None:
            raise _staff_required("a staff comment")
        author = staff.staff_no
    else:
        if principal.get("staff_no"):
            raise Problem(403, "forbidden", "Forbidden", "a staff member cannot post as the user")
        author = body["author"]
        if author != t.user_id:
            raise Problem(403, "not-ticket-user", "Not the ticket's user",
                          "users may comment only on their own tickets")
    visibility = "public" if kind == "user" else body.get("visibility", "internal")
    c = TicketComment.create(ticket=t.id, at=now, author=author, author_kind=kind, visibility=visibility,
                             body=body["body"])
    via = _via(principal)
    _event(t, author, "comment", None, None, None,
           detail={"comment_id": c.id, "visibility": visibility, **({"via": via} if via else {})}, now=now)
    if kind == "staff" and visibility == "public":
        tickets_sla.responded(t, now)
        _notice(t, "reply", body["body"][:500], now)
        outbox.publish("ticket.replied", dict(_ticket_payload(t, cfg), comment_id=c.id), subject=f"ticket:{t.id}")
    elif kind == "user":
        tickets_sla.user_replied(cfg, t, now)
    t.updated_at = now
    t.save()
    return _comment_dict(c)


@transactional()
def add_attachment(principal, ticket_id, body):
    """Attach a file by reference (URL or object key); the file itself is never stored here."""
    t = _lock(ticket_id)
    by = principal.get("staff_no") or actor_of(principal)
    a = TicketAttachment.create(ticket=t.id, ref=body["ref"], name=body.get("name") or body["ref"][-300:],
                                content_type=body.get("content_type"), size_bytes=body.get("size_bytes"),
                                added_by=by)
    _event(t, by, "attachment", None, None, a.name, detail={"attachment_id": a.id, "ref": a.ref})
    return _attachment_dict(a)


def workflows():
    """The active categories and workflows (for UIs and clients)."""
    cfg = tickets_policy.current()
    return {"policy_version": cfg.version, "categories": cfg.tickets["categories"],
            "workflows": cfg.tickets["workflows"]}
