"""The service desk: asking for service (queue cap), assignment (agent lock), presence and timeouts, transfer, close.

Every decision is taken in the database: on PostgreSQL agents and queued conversations are locked
with ``FOR UPDATE`` (``SKIP LOCKED`` where another transaction may already be taking the row), on
SQLite ``write_transaction()`` is the single writer. Lock order is always group -> agent ->
conversation, so concurrent operations never deadlock on each other.

Time-dependent state (an agent or user who stopped sending heartbeats) is computed from the clock
whenever it is read or acted on; the sweep job only materialises it and tells the user.
"""
import datetime as dt
import hashlib
import json
import logging
import math
import secrets

import peewee as pw

from app.db import db, is_postgres, transactional, write_transaction
from app.errors import Problem, not_found
from app.models.service import ServiceAgent, ServiceConversation, ServiceEvent, ServiceGroup
from app.models.staff import Staff
from app.platform import clock, sql as fastsql
from app.services.service import live, workforce
from app.services.service.policy import PRIORITY, current
from app.platform.timefmt import iso

log = logging.getLogger(__name__)

OPEN = ("bot", "queued", "serving")  # bot: the bot answers before a human (service/bot.py)
EPOCH = dt.datetime(2000, 1, 1)


def _dumps(value):
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def token_hash(token):
    return hashlib.sha256(token.encode()).hexdigest()


def _locked(query):
    return query.for_update() if is_postgres() else query


def _skip_locked(query):
    return query.for_update("FOR UPDATE SKIP LOCKED") if is_postgres() else query


def _lock_sql(skip=False):
    if not is_postgres():
        return ""  # SQLite: write_transaction() is the single writer
    return " FOR UPDATE SKIP LOCKED" if skip else " FOR UPDATE"


def _agent_row(staff_no, lock=True):
    """The agent's row (locked in the transaction), read with prepared SQL: this is the assignment hot path."""
    found = fastsql.rows(ServiceAgent, 'SELECT * FROM "service_agent" WHERE "staff_no" = ?'
                         + (_lock_sql() if lock else ""), (staff_no,))
    return found[0] if found else None


def _conversation_row(conv_id, lock=True):
    found = fastsql.rows(ServiceConversation, 'SELECT * FROM "service_conversation" WHERE "id" = ?'
                         + (_lock_sql() if lock else ""), (conv_id,))
    return found[0] if found else None


_names = {}


def _staff_name(staff_no):
    name = _names.get(staff_no)
    if name is None:
        row = fastsql.select_one(Staff, ("name",), {"staff_no": staff_no})
        name = _names[staff_no] = row[0] if row else staff_no
        if len(_names) > 10000:
            _names.clear()
    return name


def _decide(rule, subject, inputs, outcome, version, ruleset="service"):
    from app.policy import decisions
    return decisions.record(ruleset, version, rule, subject, inputs, outcome)


# --- reading ---------------------------------------------------------------------------------------

def _user_present(cfg, now):
    return ((ServiceConversation.user_seen_at >= now - cfg.user_timeout)
            & (ServiceConversation.user_left_at.is_null() | (ServiceConversation.user_left_at >= now - cfg.grace)))


def _ahead(conv):
    return ((ServiceConversation.state == "queued") & (ServiceConversation.group == conv.group)
            & ((ServiceConversation.priority > conv.priority)
               | ((ServiceConversation.priority == conv.priority)
                  & ((ServiceConversation.queued_at < conv.queued_at)
                     | ((ServiceConversation.queued_at == conv.queued_at) & (ServiceConversation.id < conv.id))))))


def _handle_seconds(cfg):
    """Mean handling time of the last 50 conversations agents finished (the policy default before there are 5)."""
    rows = list(ServiceConversation.select(ServiceConversation.assigned_at, ServiceConversation.closed_at)
                .where((ServiceConversation.state == "closed") & (ServiceConversation.close_reason == "resolved")
                       & ServiceConversation.assigned_at.is_null(False) & ServiceConversation.closed_at.is_null(False))
                .order_by(ServiceConversation.id.desc()).limit(50))
    if len(rows) < 5:
        return cfg.seconds("default_handle_seconds", 300)
    return max(1, int(sum((r.closed_at - r.assigned_at).total_seconds() for r in rows) / len(rows)))


def queue_info(conv, cfg=None, now=None):
    """Where a queued user stands: 1-based position in its group and an estimated wait in seconds."""
    if conv.state != "queued":
        return None
    cfg = cfg or current()
    now = now or clock.now()
    position = ServiceConversation.select().where(_ahead(conv)).count() + 1
    roles = cfg.groups.get(conv.group, {}).get("roles", [])
    agents = (ServiceAgent.select().where((ServiceAgent.status == "online")
                                          & (ServiceAgent.heartbeat_at >= now - cfg.agent_timeout)
                                          & ServiceAgent.groups.contains(f" {conv.group} ")).count())
    per_agent = max(1, agents) if roles else 1
    return {"position": position, "agents_online": agents,
            "estimated_wait_seconds": int(math.ceil(position / per_agent) * _handle_seconds(cfg))}


def conversation_dict(c, cfg=None, now=None):
    out = {"id": c.id, "user_id": c.user_id, "group": c.group, "channel": c.channel, "state": c.state,
           "priority": c.priority, "priority_rule": c.priority_rule, "policy_version": c.policy_version,
           "topic": c.topic, "agent": c.agent, "queued_at": iso(c.queued_at), "assigned_at": iso(c.assigned_at),
           "requeues": c.requeues, "closed_at": iso(c.closed_at), "close_reason": c.close_reason,
           "close_category": c.close_category, "close_summary": c.close_summary, "closed_by": c.closed_by,
           "complaint_id": c.complaint_id, "ticket_id": c.ticket_id, "last_seq": c.last_seq,
           "csat": ({"score": c.csat_score, "comment": c.csat_comment, "at": iso(c.csat_at)}
                    if c.csat_score is not None else None),
           "created_at": iso(c.created_at)}
    if c.state == "queued":
        out["queue"] = queue_info(c, cfg, now)
    return out


def get_conversation(conv_id):
    c = _conversation_row(conv_id, lock=False)
    if c is None:
        raise not_found("conversation", conv_id)
    return c


def view(conv_id):
    """A conversation as it stands now (timeouts due by now are applied first)."""
    expire(conversation_id=conv_id)
    return conversation_dict(get_conversation(conv_id))


def check_user_token(conv_id, token):
    c = get_conversation(conv_id)
    if not token or not secrets.compare_digest(c.token_hash, token_hash(token)):
        raise Problem(401, "unauthorized", "Unauthorized", "unknown conversation token")
    return c


def agent_dict(a, cfg=None, now=None):
    cfg = cfg or current()
    now = now or clock.now()
    serving = list(ServiceConversation.select().where((ServiceConversation.agent == a.staff_no)
                                                      & (ServiceConversation.state == "serving"))
                   .order_by(ServiceConversation.assigned_at))
    return {"staff_no": a.staff_no, "status": a.status, "groups": a.groups.split(), "capacity": a.capacity,
            "serving_count": a.serving, "lock": "closed" if a.serving >= a.capacity else "open",
            "heartbeat_at": iso(a.heartbeat_at), "heartbeat_seconds": cfg.seconds("heartbeat_seconds", 10),
            "timeout_at": iso(_agent_deadline(a, cfg)),
            "serving": [conversation_dict(c, cfg, now) for c in serving]}


def agent_view(staff_no):
    expire(staff_no=staff_no)
    a = ServiceAgent.get_or_none(ServiceAgent.staff_no == staff_no)
    if a is None:  # never online yet: the same shape as any agent's
        return {"staff_no": staff_no, "status": "offline", "groups": [], "capacity": 0, "serving_count": 0,
                "lock": "open", "heartbeat_at": None, "heartbeat_seconds": current().seconds("heartbeat_seconds", 10),
                "timeout_at": None, "serving": []}
    return agent_dict(a)


def events_after(conv_id, after_seq, audience=("all", "user"), limit=500):
    q = (ServiceEvent.select().where((ServiceEvent.conversation == conv_id) & (ServiceEvent.seq > after_seq)
                                     & ServiceEvent.audience.in_(list(audience)))
         .order_by(ServiceEvent.seq).limit(limit))
    return [live.event_dict(e) for e in q]


def agent_events_after(staff_no, after_id, limit=500):
    q = (ServiceEvent.select().where((ServiceEvent.staff_no == staff_no) & (ServiceEvent.id > after_id)
                                     & ServiceEvent.audience.in_(["all", "agent"]))
         .order_by(ServiceEvent.id).limit(limit))
    return [live.event_dict(e) for e in q]


def transcript(conv_id):
    """The whole conversation, every event oldest first (the reference a ticket carries)."""
    c = get_conversation(conv_id)
    return {"conversation": conversation_dict(c),
            "events": events_after(conv_id, 0, audience=("all", "user", "agent"), limit=100000)}


# --- asking for service (rule 1) -------------------------------------------------------------------

def _user_facts(body):
    """Membership's facts and service benefit when it knows the user, else what the caller sent."""
    from app.services.service import membership_port
    user = dict(body.get("user") or {})
    facts = {"level": user.get("level"), "paid": bool(user.get("paid", False)), "plan": None, "source": "request"}
    benefit = {"priority": 0, "queue": None, "dedicated_agent": False}
    found = membership_port.facts(body["user_id"])
    if found is not None:
        facts = dict(found[0], source="membership")
        benefit = found[1]
    return facts, benefit


def _ensure_groups(cfg):
    have = {g.code for g in ServiceGroup.select(ServiceGroup.code)}
    missing = [code for code in cfg.groups if code not in have]
    if missing:
        ServiceGroup.insert_many([{"code": c} for c in missing]).on_conflict_ignore().execute()


def request_service(body):
    """A user asks for service (rule 1): refused at once when the group's queue is at its cap.

    Args:
        body: {user_id, group?, channel?, topic?, user?: {level, paid}} (schemas/api/service/request.json).

    Returns:
        (status, {conversation, user_token}): 201 queued (or served at once), 200 the user's open conversation.

    Raises:
        Problem: 429 ``queue-full`` (nothing is created), 409 ``outside-business-hours``.
    """
    from app import engine
    cfg = current()
    now = clock.now()
    user, benefit = _user_facts(body)
    asked = body.get("group") or "general"
    facts = {"user": user, "benefit": benefit, "group": asked, "channel": body.get("channel", "app")}
    ev = engine.evaluate(PRIORITY, facts)
    priority, group = 0, asked
    for act in ev.actions():
        if act["action"] == "set_queue_priority":
            priority = int(act["priority"])
        elif act["action"] == "route_to_group":
            group = act["group"]
        elif act["action"] == "route_to_benefit_queue" and benefit.get("queue") in cfg.groups:
            group = benefit["queue"]
    g = cfg.group(group)
    subject = f"service:user:{body['user_id']}"
    if cfg.doc.get("outside_hours", "refuse") == "refuse" and not cfg.is_open(now):
        with write_transaction():
            _decide("calendar", subject, facts, {"refused": "outside-business-hours", "group": group}, cfg.version)
        raise Problem(409, "outside-business-hours", "Outside business hours",
                      f"customer service ({g['name']}) is closed now; leave a message or try again in business "
                      f"hours", group=group, calendar=cfg.doc["calendar"])
    _ensure_groups(cfg)
    token = secrets.token_urlsafe(24)
    from app.services.service import bot
    with_bot = bot.exists(cfg)

    @transactional()
    def attempt():
        _locked(ServiceGroup.select().where(ServiceGroup.code == group)).get()
        existing = _locked(ServiceConversation.select().where((ServiceConversation.user_id == body["user_id"])
                                                              & ServiceConversation.state.in_(OPEN))).first()
        if existing is not None:
            ServiceConversation.update(token_hash=token_hash(token), user_seen_at=now, user_left_at=None) \
                .where(ServiceConversation.id == existing.id).execute()
            return 200, existing, []
        if with_bot:
            c = ServiceConversation.create(
                user_id=body["user_id"], group=group, channel=body.get("channel", "app"), state="bot",
                priority=priority, priority_rule=ev.rule, policy_version=cfg.version, facts=_dumps(facts),
                topic=body.get("topic", ""), queued_at=None, user_seen_at=now, token_hash=token_hash(token),
                created_at=now)
            _decide("bot.enabled", f"service:conversation:{c.id}", facts, {"bot": True, "group": group},
                    cfg.version)
            return 201, c, [live.append(c, "message", "bot", {"type": "text", "text": bot.settings(cfg)["greeting"]},
                                        now=now)]
        queued = ServiceConversation.select().where((ServiceConversation.state == "queued")
                                                    & (ServiceConversation.group == group)).count()
        if queued >= g["queue_cap"]:
            _decide(f"groups.{group}.queue_cap", subject, dict(facts, queued=queued),
                    {"refused": "queue-full", "group": group, "queue_cap": g["queue_cap"]}, cfg.version)
            return 429, {"queued": queued}, None
        c = ServiceConversation.create(
            user_id=body["user_id"], group=group, channel=body.get("channel", "app"), state="queued",
            priority=priority, priority_rule=ev.rule, policy_version=cfg.version, facts=_dumps(facts),
            topic=body.get("topic", ""), queued_at=now, user_seen_at=now, token_hash=token_hash(token),
            created_at=now)
        _decide(ev.rule, f"service:conversation:{c.id}", facts,
                {"group": group, "priority": priority, "queued": queued + 1}, ev.version, ruleset=PRIORITY)
        evs = [live.append(c, "queued", "system", {"text": f"已进入{g['name']}排队", "group": group,
                                                   "priority": priority}, now=now)]
        return 201, c, evs

    try:
        status, c, evs = attempt()
    except pw.IntegrityError:  # the same user asked twice at once: the other request's conversation stands
        if db.in_transaction():
            raise
        status, c, evs = attempt()
    if status == 429:
        raise Problem(429, "queue-full", "Queue full",
                      f"the {g['name']} queue is full ({c['queued']}/{g['queue_cap']} waiting); you were not "
                      f"added to the queue — please try again later", group=group, queue_cap=g["queue_cap"],
                      queued=c["queued"])
    live.publish(evs)
    if status == 201:
        dispatch()
    c = get_conversation(c.id)
    return status, {"conversation": conversation_dict(c, cfg), "user_token": token}


# --- assignment (rule 2) -------------------------------------------------------------------------

_HEAD = ('SELECT "id" FROM "service_conversation" WHERE "state" = \'queued\' AND "group" IN ({marks})'
         ' AND "user_seen_at" >= ? AND ("user_left_at" IS NULL OR "user_left_at" >= ?)'
         ' ORDER BY "priority" DESC, "queued_at", "id" LIMIT 1')


def _claim_head(cfg, groups, staff_no, now):
    """Give the first user of the queue in ``groups`` (highest priority, then longest waiting) to ``staff_no``, in
    one statement: the head is locked with ``SKIP LOCKED`` on PostgreSQL (a row another transaction is taking is
    passed over; SQLite has one writer) and the UPDATE re-checks it is still queued — never two agents for one
    user. The conversation's event counter moves on by one for the ``assigned`` event.

    Returns:
        the conversation (as it is now), or None when nobody is waiting.
    """
    head = _HEAD.format(marks=", ".join("?" * len(groups))) + _lock_sql(skip=True)
    found = fastsql.rows(ServiceConversation,
                         'UPDATE "service_conversation" SET "state" = \'serving\', "agent" = ?, "assigned_at" = ?,'
                         ' "last_seq" = "last_seq" + 1 WHERE "id" = (' + head + ') AND "state" = \'queued\''
                         ' RETURNING *', (staff_no, now, *groups, now - cfg.user_timeout, now - cfg.grace))
    return found[0] if found else None


def _log_assignment(cfg, conv, agent, serving_before, now, how):
    """The decision and the user's ``assigned`` event of an assignment just made (one round trip on PostgreSQL)."""
    from app.policy import decisions as dlog
    from app.models.policy import Decision
    waited = int((now - conv.queued_at).total_seconds())
    decision = dlog.row("service", cfg.version, how, f"service:conversation:{conv.id}",
                        {"group": conv.group, "priority": conv.priority, "agent_serving": serving_before,
                         "agent_capacity": agent.capacity, "waited_seconds": waited},
                        {"assigned_to": agent.staff_no, "group": conv.group})
    name = _staff_name(agent.staff_no)
    body = {"text": f"客服 {name} 为您服务", "agent": agent.staff_no, "agent_name": name, "how": how,
            "waited_seconds": waited}
    event_id = live.insert_with(conv, "assigned", "system", body, staff_no=agent.staff_no, now=now,
                                also=(Decision, decision))
    return [live.event_of(conv, event_id, conv.last_seq, "assigned", "system", body, "all", agent.staff_no, now)]


def _stale(cfg, agent, now):
    deadline = _agent_deadline(agent, cfg)
    return agent.status == "offline" or (deadline is not None and deadline <= now)


class _NobodyWaiting(Exception):
    """Rolls back a take's agent update when the queue turned out empty."""


def take(staff_no):
    """An agent takes the next user of its groups (pull): the highest priority, then the longest waiting.

    The hot path is four statements: the agent's UPDATE (its guards — online, fresh heartbeat, lock open —
    in the WHERE, the row locked first), the head's UPDATE (SKIP LOCKED), one INSERT of the decision and
    the event, COMMIT. Only a refusal reads the agent again to say why.

    Returns:
        the conversation dict, or None when nobody is waiting.

    Raises:
        Problem: 409 ``agent-locked`` while the agent's lock is closed, 409 ``agent-offline``/``agent-away``.
    """
    cfg = current()

    @transactional()
    def attempt():
        now = clock.now()
        found = fastsql.rows(ServiceAgent,
                             'UPDATE "service_agent" SET "serving" = "serving" + 1, "last_assigned_at" = ?,'
                             ' "updated_at" = ? WHERE "staff_no" = ? AND ' + _FREE + ' RETURNING *',
                             (now, now, staff_no, now - cfg.agent_timeout, now - cfg.grace))
        if not found:  # refused: say why (nothing was changed)
            agent = _agent_row(staff_no)
            if agent is None or agent.status == "offline":
                raise Problem(409, "agent-offline", "Agent offline", "go online first")
            if _stale(cfg, agent, now):
                return "stale", None
            if agent.status != "online":
                raise Problem(409, "agent-away", "Agent away", "an agent who is away is offered nobody")
            return "locked", agent
        agent = found[0]
        conv = _claim_head(cfg, agent.groups.split(), staff_no, now)
        if conv is None:
            raise _NobodyWaiting()
        return conv, _log_assignment(cfg, conv, agent, agent.serving - 1, now, "pull")

    for retry in (True, False):
        try:
            conv, evs = attempt()
        except _NobodyWaiting:
            return None
        if conv == "stale":
            agent_gone(staff_no, "agent-timeout")
            raise Problem(409, "agent-offline", "Agent offline",
                          "heartbeats stopped for too long; your users were handed on — go online again")
        if conv == "locked":
            # a user being served may have timed out since: materialise that, then look once more
            if retry and expire(staff_no=staff_no)["users"]:
                continue
            raise Problem(409, "agent-locked", "Agent lock closed",
                          f"finish your current user first ({evs.serving}/{evs.capacity} served)")
        break
    live.publish(evs)
    return conversation_dict(conv, cfg)


_FREE = ('"status" = \'online\' AND "serving" < "capacity" AND "heartbeat_at" >= ?'
         ' AND ("left_at" IS NULL OR "left_at" >= ?)')


def _offer(cfg, agent_id):
    """One auto-assignment for one free agent (skipped when another transaction holds it)."""
    @transactional()
    def attempt():
        now = clock.now()
        found = fastsql.rows(ServiceAgent, 'SELECT * FROM "service_agent" WHERE "id" = ? AND ' + _FREE
                             + _lock_sql(skip=True), (agent_id, now - cfg.agent_timeout, now - cfg.grace))
        if not found:
            return []
        agent = found[0]
        conv = _claim_head(cfg, agent.groups.split(), agent.staff_no, now)
        if conv is None:
            return []
        n = fastsql.execute('UPDATE "service_agent" SET "serving" = "serving" + 1, "last_assigned_at" = ?,'
                            ' "updated_at" = ? WHERE "id" = ? AND "serving" < "capacity"', (now, now, agent.id)).rowcount
        if n != 1:  # never one agent locked twice: the guard is in the UPDATE itself (the row is ours)
            raise Problem(409, "agent-locked", "Agent busy", f"agent {agent.staff_no} is at capacity")
        return _log_assignment(cfg, conv, agent, agent.serving, now, "auto")
    evs = attempt()
    live.publish(evs)
    return bool(evs)


def dispatch():
    """Auto-assignment (policy ``assignment: auto``): free agents, longest idle first, get the queue heads.

    Safe to run anywhere at any time (after a request, a close, an agent going online, a sweep).

    Returns:
        how many users were assigned.
    """
    cfg = current()
    if cfg.assignment != "auto":
        return 0
    total = 0
    while True:
        now = clock.now()
        ids = [r[0] for r in fastsql.execute('SELECT "id" FROM "service_agent" WHERE ' + _FREE
                                             + ' ORDER BY "last_assigned_at", "id"',
                                             (now - cfg.agent_timeout, now - cfg.grace)).fetchall()]
        progressed = 0
        for agent_id in ids:
            progressed += _offer(cfg, agent_id)
        total += progressed
        if not progressed:
            return total


# --- presence --------------------------------------------------------------------------------------

def _agent_deadline(a, cfg):
    if a.status == "offline" or a.heartbeat_at is None:
        return None
    d = a.heartbeat_at + cfg.agent_timeout
    if a.left_at is not None:
        d = min(d, a.left_at + cfg.grace)
    return d


def _user_deadline(c, cfg):
    d = c.user_seen_at + cfg.user_timeout
    if c.user_left_at is not None:
        d = min(d, c.user_left_at + cfg.grace)
    return d


def active_staff(staff_no):
    """The active staff member (422 ``unknown-staff`` otherwise)."""
    s = Staff.get_or_none(Staff.staff_no == staff_no)
    if s is None or not s.active:
        raise Problem(422, "unknown-staff", "Unknown staff member", f"no active staff member {staff_no!r}")
    return s


def go_online(staff_no, groups=None):
    """An agent goes online in the skill groups its roles staff (or a subset); capacity from policy."""
    cfg = current()
    s = active_staff(staff_no)
    mine = cfg.groups_for(s.role_list)
    if not mine:
        raise Problem(403, "no-skill-group", "No skill group",
                      f"roles {s.role_list} staff no skill group of the service policy")
    chosen = list(groups or mine)
    bad = [g for g in chosen if g not in mine]
    if bad:
        raise Problem(422, "not-in-group", "Not in skill group", f"{staff_no} does not staff {bad}", allowed=mine)
    expire(staff_no=staff_no)
    now = clock.now()
    workforce.check_online(staff_no, now)
    with write_transaction():
        before = _agent_row(staff_no)
        if before is None or before.status != "online":
            workforce.log_presence(staff_no, "online", "go-online", now)
        fields = {"status": "online", "groups": " " + " ".join(chosen) + " ", "capacity": cfg.capacity(s.role_list),
                  "heartbeat_at": now, "left_at": None, "updated_at": now}
        n = ServiceAgent.update(fields).where(ServiceAgent.staff_no == staff_no).execute()
        if not n:
            ServiceAgent.insert(dict(fields, staff_no=staff_no, serving=0, last_assigned_at=EPOCH)) \
                .on_conflict_ignore().execute()
            ServiceAgent.update(fields).where(ServiceAgent.staff_no == staff_no).execute()
    dispatch()
    return agent_view(staff_no)


def go_away(staff_no):
    """Away: keeps the users being served, is offered nobody new."""
    expire(staff_no=staff_no)
    now = clock.now()
    with write_transaction():
        before = _agent_row(staff_no)
        n = (ServiceAgent.update(status="away", heartbeat_at=now, updated_at=now)
             .where((ServiceAgent.staff_no == staff_no) & (ServiceAgent.status != "offline")).execute())
        if n and before.status != "away":
            workforce.log_presence(staff_no, "away", "go-away", now)
    if not n:
        raise Problem(409, "agent-offline", "Agent offline", "go online first")
    return agent_view(staff_no)


def agent_heartbeat(staff_no):
    expire(staff_no=staff_no)
    now = clock.now()
    n = (ServiceAgent.update(heartbeat_at=now, updated_at=now)
         .where((ServiceAgent.staff_no == staff_no) & (ServiceAgent.status != "offline")).execute())
    if not n:
        raise Problem(409, "agent-offline", "Agent offline",
                      "heartbeats stopped for too long or you went offline; go online again")
    return agent_view(staff_no)


def go_offline(staff_no):
    """Explicit offline (rule 3): the lock opens, the serving list is cleared, each user is told what happens."""
    agent_gone(staff_no, "agent-offline", explicit=True)
    dispatch()
    return agent_view(staff_no)


def agent_connection(staff_no, connected):
    """The agent's live stream opened (clears a pending disconnect) or closed (offline after the grace)."""
    now = clock.now()
    ServiceAgent.update(left_at=None if connected else now).where(
        (ServiceAgent.staff_no == staff_no) & (ServiceAgent.status != "offline")).execute()


def user_heartbeat(conv_id, user_id):
    c = _users_conversation(conv_id, user_id)
    expire(conversation_id=c.id)
    now = clock.now()
    n = (ServiceConversation.update(user_seen_at=now, user_left_at=None)
         .where((ServiceConversation.id == c.id) & ServiceConversation.state.in_(OPEN)).execute())
    if not n:
        raise Problem(409, "conversation-closed", "Conversation closed", "this conversation has ended")
    return view(c.id)


def user_connection(conv_id, connected):
    now = clock.now()
    fields = {"user_left_at": None, "user_seen_at": now} if connected else {"user_left_at": now}
    ServiceConversation.update(fields).where((ServiceConversation.id == conv_id)
                                             & ServiceConversation.state.in_(OPEN)).execute()


def _users_conversation(conv_id, user_id):
    c = get_conversation(conv_id)
    if c.user_id != user_id:
        raise not_found("conversation", conv_id)
    return c


# --- rule 3: timeouts and offline ----------------------------------------------------------------

NEXT_TEXT = {
    "requeued": "客服已离线，已为您重新排队（优先接入），请稍候",
    "ticket": "客服暂时无法继续服务，已为您转为工单 #{ticket}，处理结果会通知您",
    "closed": "会话已结束，如需帮助请重新发起咨询",
}


def _end(cfg, conv, now, reason, outcome, by, staff_no=None):
    """Close ``conv`` (locked) or turn it into a ticket; returns the user-facing events."""
    from app.services.service import complaints
    g = cfg.groups.get(conv.group) or {}
    ticket_id = None
    if outcome == "ticket":
        comp = complaints.open_for_conversation(conv, g.get("ticket_category", "投诉"),
                                                f"会话 #{conv.id} 未完成（{reason}）", by, now)
        ticket_id = comp["ticket_id"]
    ServiceConversation.update(state="closed", closed_at=now, close_reason=reason, closed_by=by) \
        .where(ServiceConversation.id == conv.id).execute()
    conv.state = "closed"
    text = NEXT_TEXT["ticket" if ticket_id else "closed"].format(ticket=ticket_id)
    return [live.append(conv, "closed", "system", {"text": text, "reason": reason,
                                                  "next": "ticket" if ticket_id else "closed",
                                                  "ticket_id": ticket_id}, staff_no=staff_no, now=now)]


def agent_gone(staff_no, reason, explicit=False):
    """The agent timed out or went offline: lock opens, serving list cleared, each user told what happens next.

    Returns:
        the conversations released (ids), or [] when the agent was not due.
    """
    cfg = current()

    @transactional()
    def attempt():
        now = clock.now()
        agent = _locked(ServiceAgent.select().where(ServiceAgent.staff_no == staff_no)).first()
        if agent is None or agent.status == "offline":
            return [], []
        deadline = _agent_deadline(agent, cfg)
        if not explicit and (deadline is None or deadline > now):
            return [], []
        why = reason
        if not explicit and agent.left_at is not None and agent.left_at + cfg.grace <= now:
            why = "agent-disconnected"
        evs, released = [], []
        convs = list(_locked(ServiceConversation.select().where((ServiceConversation.agent == staff_no)
                                                                & (ServiceConversation.state == "serving"))
                             .order_by(ServiceConversation.id)))
        for conv in convs:
            g = cfg.groups.get(conv.group) or {}
            outcome = g.get("on_agent_timeout", "requeue")
            if outcome == "requeue":
                boost = int(g.get("requeue_boost", 10))
                ServiceConversation.update(state="queued", agent=None, assigned_at=None,
                                           priority=conv.priority + boost, requeues=conv.requeues + 1) \
                    .where(ServiceConversation.id == conv.id).execute()
                conv.state, conv.agent, conv.priority = "queued", None, conv.priority + boost
                info = queue_info(conv, cfg, now)
                evs.append(live.append(conv, "requeued", "system",
                                       {"text": NEXT_TEXT["requeued"], "reason": why, "next": "requeued",
                                        "queue": info}, staff_no=staff_no, now=now))
            else:
                evs += _end(cfg, conv, now, why, outcome, f"system:{why}", staff_no=staff_no)
            _decide(f"groups.{conv.group}.on_agent_timeout", f"service:conversation:{conv.id}",
                    {"agent": staff_no, "reason": why, "heartbeat_at": agent.heartbeat_at, "left_at": agent.left_at},
                    {"outcome": outcome}, cfg.version)
            released.append(conv.id)
        ServiceAgent.update(status="offline", serving=0, left_at=None, updated_at=now) \
            .where(ServiceAgent.id == agent.id).execute()
        # a timeout took effect at the deadline, not when it was noticed: attendance counts to then
        workforce.log_presence(staff_no, "offline", "go-offline" if explicit else why,
                               now if explicit else min(now, deadline))
        return released, evs

    released, evs = attempt()
    live.publish(evs)
    return released


def user_gone(conv_id, reason, explicit=False, user_id=None):
    """The user timed out, left or disconnected: an agent serving them has its lock opened and is told."""
    cfg = current()

    @transactional()
    def attempt():
        now = clock.now()
        peek = get_conversation(conv_id)
        if user_id is not None and peek.user_id != user_id:
            raise not_found("conversation", conv_id)
        if peek.state not in OPEN:
            return []
        agent = None
        if peek.agent:
            agent = _locked(ServiceAgent.select().where(ServiceAgent.staff_no == peek.agent)).first()
        conv = _locked(ServiceConversation.select().where(ServiceConversation.id == conv_id)).get()
        if conv.state not in OPEN or conv.agent != peek.agent:
            return None  # changed meanwhile: look again
        if not explicit and _user_deadline(conv, cfg) > now:
            return []
        why = reason
        if not explicit and conv.user_left_at is not None and conv.user_left_at + cfg.grace <= now:
            why = "user-disconnected"
        g = cfg.groups.get(conv.group) or {}
        outcome = g.get("on_user_timeout", "close")
        evs = []
        staff_no = conv.agent
        if conv.state == "serving" and agent is not None:
            ServiceAgent.update(serving=pw.Case(None, [(ServiceAgent.serving > 0, ServiceAgent.serving - 1)], 0),
                                updated_at=now).where(ServiceAgent.id == agent.id).execute()
            evs.append(live.append(conv, "user_left", "system", {"text": "用户已离线，会话结束", "reason": why},
                                   audience="agent", staff_no=staff_no, now=now))
        evs += _end(cfg, conv, now, why, outcome, f"system:{why}", staff_no=staff_no)
        _decide(f"groups.{conv.group}.on_user_timeout", f"service:conversation:{conv.id}",
                {"reason": why, "user_seen_at": conv.user_seen_at, "user_left_at": conv.user_left_at,
                 "agent": staff_no}, {"outcome": outcome}, cfg.version)
        return evs

    for _ in range(3):
        evs = attempt()
        if evs is not None:
            break
    live.publish(evs or [])
    return bool(evs)


def expire(staff_no=None, conversation_id=None):
    """Apply every timeout due by now (all of them, or one agent's / one conversation's).

    Returns:
        {"agents": n, "users": n} materialised by this call.
    """
    cfg = current()
    now = clock.now()
    aq = ServiceAgent.select(ServiceAgent.staff_no).where(
        (ServiceAgent.status != "offline")
        & ((ServiceAgent.heartbeat_at < now - cfg.agent_timeout)
           | (ServiceAgent.left_at.is_null(False) & (ServiceAgent.left_at < now - cfg.grace))))
    cq = ServiceConversation.select(ServiceConversation.id).where(
        (ServiceConversation.state != "closed")  # the open states, as the partial due-time indexes read them
        & ((ServiceConversation.user_seen_at < now - cfg.user_timeout)
           | (ServiceConversation.user_left_at.is_null(False) & (ServiceConversation.user_left_at < now - cfg.grace))))
    if staff_no is not None or conversation_id is not None:
        aq = aq.where(ServiceAgent.staff_no == staff_no) if staff_no else None
        if conversation_id is not None:
            c = ServiceConversation.get_or_none(ServiceConversation.id == conversation_id)
            aq = (ServiceAgent.select(ServiceAgent.staff_no).where(
                (ServiceAgent.staff_no == c.agent) & (ServiceAgent.status != "offline")
                & ((ServiceAgent.heartbeat_at < now - cfg.agent_timeout)
                   | (ServiceAgent.left_at.is_null(False) & (ServiceAgent.left_at < now - cfg.grace))))
                  if c is not None and c.agent else None)
            cq = cq.where(ServiceConversation.id == conversation_id)
        else:
            cq = cq.where(ServiceConversation.agent == staff_no)
    agents = [a.staff_no for a in aq] if aq is not None else []
    users = [c.id for c in cq]
    n_agents = sum(1 for s in agents if agent_gone(s, "agent-timeout") is not None)
    n_users = sum(1 for cid in users if user_gone(cid, "user-timeout"))
    if agents or users:
        dispatch()
    return {"agents": n_agents, "users": n_users}


# --- conversation actions --------------------------------------------------------------------------

def _serving_conv(staff_no, conv_id):
    conv = _conversation_row(conv_id)
    if conv is None:
        raise not_found("conversation", conv_id)
    if conv.state != "serving" or conv.agent != staff_no:
        raise Problem(409, "not-your-conversation", "Not your conversation",
                      f"conversation {conv_id} is not being served by {staff_no}")
    return conv


def _message_body(body):
    kind = body["type"]
    out = {"type": kind}
    for k in ("text", "image_ref", "caption", "order_no", "order_title", "amount_fen", "order_status"):
        if k in body:
            out[k] = body[k]
    return out


def user_message(conv_id, body):
    """The user says something (text, an image by reference, an order card); counts as a heartbeat."""
    expire(conversation_id=conv_id)

    @transactional()
    def attempt():
        now = clock.now()
        conv = _locked(ServiceConversation.select().where(ServiceConversation.id == conv_id)).first()
        if conv is None or conv.user_id != body["user_id"]:
            raise not_found("conversation", conv_id)
        if conv.state not in OPEN:
            raise Problem(409, "conversation-closed", "Conversation closed", "this conversation has ended")
        ServiceConversation.update(user_seen_at=now).where(ServiceConversation.id == conv.id).execute()
        ev = live.append(conv, "message", "user", _message_body(body["message"]), now=now)
        replies = _bot_turn(conv, body["message"], now) if conv.state == "bot" else []
        return ev, replies

    ev, replies = attempt()
    live.publish([ev] + replies)
    if not replies:
        return ev
    if any(r["kind"] == "queued" for r in replies):
        dispatch()
    return dict(ev, replies=[r for r in replies if r["audience"] != "agent"])


def _bot_turn(conv, message, now):
    """The bot's answer to one user message (in the message's transaction); hands over to the queue."""
    from app.services.knowledge import entries
    from app.services.service import bot
    cfg = current()
    settings = bot.settings(cfg)
    text = message.get("text") or message.get("caption") or ""
    d = bot.decide(text, settings, bot.failed_turns(conv.id))
    subject = f"service:conversation:{conv.id}"
    if d["action"] == "answer":
        hit = d["entry"]
        entries.use(hit["id"], "bot", conv.id, with_view=False)
        _decide("bot.confidence_threshold", subject, {"text": text, "hits": d["hits"], "features": d["features"]},
                {"answer": hit["id"], "confidence": d["confidence"]}, cfg.version)
        return [live.append(conv, "message", "bot", {"type": "text", "text": hit["body"], "entry_id": hit["id"],
                                                    "title": hit["title"], "confidence": d["confidence"]}, now=now)]
    if d["action"] == "clarify":
        return [live.append(conv, "message", "bot", {"type": "text", "text": settings["fallback"], "failed": True,
                                                    "confidence": d["confidence"]}, now=now)]
    g = cfg.group(conv.group)
    queued = ServiceConversation.select().where((ServiceConversation.state == "queued")
                                                & (ServiceConversation.group == conv.group)).count()
    rule = "bot.handover_phrases" if d["reason"] == "user-asked" else "bot.max_failed_turns"
    if queued >= g["queue_cap"]:
        _decide(f"groups.{conv.group}.queue_cap", subject, {"queued": queued}, {"refused": "queue-full"}, cfg.version)
        return [live.append(conv, "message", "bot", {"type": "text", "failed": d["reason"] != "user-asked",
                                                    "text": f"{g['name']}排队已满，请稍后再试。"}, now=now)]
    ServiceConversation.update(state="queued", queued_at=now).where(ServiceConversation.id == conv.id).execute()
    conv.state = "queued"
    _decide(rule, subject, {"text": text, "hits": d["hits"], "features": d.get("features")},
            {"handover": d["reason"], "group": conv.group, "confidence": d["confidence"]}, cfg.version)
    return [live.append(conv, "handover", "system", {"reason": d["reason"], "confidence": d["confidence"],
                                                     "transcript": bot.transcript_lines(conv.id)},
                        audience="agent", now=now),
            live.append(conv, "queued", "system", {"text": f"正在为您转接人工，已进入{g['name']}排队",
                                                   "group": conv.group, "priority": conv.priority,
                                                   "reason": d["reason"]}, now=now)]


def agent_message(staff_no, conv_id, body):
    expire(staff_no=staff_no)

    @transactional()
    def attempt():
        conv = _serving_conv(staff_no, conv_id)
        return live.append(conv, "message", "agent", dict(_message_body(body), staff_no=staff_no))

    ev = attempt()
    live.publish([ev])
    return ev


def close(staff_no, conv_id, body):
    """The agent finishes: closed with category and summary; the lock opens; the user is asked for CSAT."""
    cfg = current()
    if body["category"] not in cfg.doc["close_categories"]:
        raise Problem(422, "unknown-close-category", "Unknown close category", f"{body['category']!r}",
                      allowed=cfg.doc["close_categories"])

    @transactional()
    def attempt():
        now = clock.now()
        agent = _agent_row(staff_no)
        if agent is not None and agent.status != "offline" and _stale(cfg, agent, now):
            return None
        conv = _serving_conv(staff_no, conv_id)
        fastsql.execute('UPDATE "service_conversation" SET "state" = \'closed\', "closed_at" = ?, '
                        '"close_reason" = \'resolved\', "close_category" = ?, "close_summary" = ?, "closed_by" = ?'
                        ' WHERE "id" = ?', (now, body["category"], body.get("summary", ""), staff_no, conv.id))
        fastsql.execute('UPDATE "service_agent" SET "serving" = CASE WHEN "serving" > 0 THEN "serving" - 1 ELSE 0 END,'
                        ' "updated_at" = ? WHERE "id" = ?', (now, agent.id))
        conv.state, conv.closed_at, conv.close_reason = "closed", now, "resolved"
        conv.close_category, conv.close_summary, conv.closed_by = body["category"], body.get("summary", ""), staff_no
        return conv, [live.append(conv, "closed", "system", {"text": "本次服务已结束，请为本次服务评分",
                                                             "reason": "resolved", "next": "csat",
                                                             "category": body["category"]}, now=now)]

    done = attempt()
    if done is None:
        agent_gone(staff_no, "agent-timeout")
        raise Problem(409, "agent-offline", "Agent offline",
                      "heartbeats stopped for too long; your users were handed on — go online again")
    conv, evs = done
    live.publish(evs)
    dispatch()
    return conversation_dict(conv, cfg)


def transfer(staff_no, conv_id, body):
    """Hand a user to another agent (online, lock open) or back to a group's queue (keeping their place)."""
    cfg = current()
    expire(staff_no=staff_no)
    to_agent, to_group = body.get("to_agent"), body.get("to_group")
    if to_agent == staff_no:
        raise Problem(422, "transfer-to-self", "Transfer to self", "choose another agent")
    if to_group:
        cfg.group(to_group)
        _ensure_groups(cfg)

    @transactional()
    def attempt():
        now = clock.now()
        if to_group:
            _locked(ServiceGroup.select().where(ServiceGroup.code == to_group)).get()
        names = sorted({staff_no, to_agent} - {None})
        agents = {a.staff_no: a for a in _locked(ServiceAgent.select().where(ServiceAgent.staff_no.in_(names))
                                                 .order_by(ServiceAgent.staff_no))}
        conv = _serving_conv(staff_no, conv_id)
        me = agents[staff_no]
        note = body.get("note", "")
        if to_agent:
            target = agents.get(to_agent)
            if target is None or target.status != "online" or _agent_deadline(target, cfg) <= now:
                raise Problem(409, "agent-unavailable", "Agent unavailable", f"{to_agent} is not online")
            if target.serving >= target.capacity:
                raise Problem(409, "agent-locked", "Agent lock closed", f"{to_agent} is serving at capacity")
            if conv.group not in target.groups.split():
                raise Problem(409, "not-in-group", "Not in skill group", f"{to_agent} does not staff {conv.group}")
            ServiceAgent.update(serving=ServiceAgent.serving - 1, updated_at=now).where(ServiceAgent.id == me.id).execute()
            ServiceAgent.update(serving=ServiceAgent.serving + 1, last_assigned_at=now, updated_at=now) \
                .where(ServiceAgent.id == target.id).execute()
            ServiceConversation.update(agent=to_agent, assigned_at=now).where(ServiceConversation.id == conv.id).execute()
            evs = [live.append(conv, "transferred", "system", {"text": "已为您转接到其他客服", "from": staff_no,
                                                              "to_agent": to_agent, "note": note},
                               staff_no=staff_no, audience="agent", now=now)]
            conv.agent = to_agent
            evs.append(live.append(conv, "assigned", "system", {"text": "已为您转接客服", "agent": to_agent,
                                                               "how": "transfer", "from": staff_no, "note": note},
                                   staff_no=to_agent, now=now))
            outcome = {"to_agent": to_agent}
        else:
            queued = ServiceConversation.select().where((ServiceConversation.state == "queued")
                                                        & (ServiceConversation.group == to_group)).count()
            cap = cfg.groups[to_group]["queue_cap"]
            if queued >= cap:
                _decide(f"groups.{to_group}.queue_cap", f"service:conversation:{conv.id}", {"queued": queued},
                        {"refused": "queue-full", "group": to_group}, cfg.version)
                return 429, {"queued": queued, "cap": cap}, None
            ServiceAgent.update(serving=ServiceAgent.serving - 1, updated_at=now).where(ServiceAgent.id == me.id).execute()
            ServiceConversation.update(state="queued", group=to_group, agent=None, assigned_at=None) \
                .where(ServiceConversation.id == conv.id).execute()
            conv.state, conv.group, conv.agent = "queued", to_group, None
            evs = [live.append(conv, "transferred", "system",
                               {"text": f"已为您转接到{cfg.groups[to_group]['name']}，请稍候", "from": staff_no,
                                "to_group": to_group, "note": note, "queue": queue_info(conv, cfg, now)},
                               staff_no=staff_no, now=now)]
            outcome = {"to_group": to_group}
        _decide("transfer", f"service:conversation:{conv.id}", {"from": staff_no, "note": note}, outcome, cfg.version)
        return 200, None, evs

    status, info, evs = attempt()
    if status == 429:
        raise Problem(429, "queue-full", "Queue full", f"the {to_group} queue is full ({info['queued']}/{info['cap']})",
                      group=to_group, queue_cap=info["cap"], queued=info["queued"])
    live.publish(evs)
    dispatch()
    return conversation_dict(get_conversation(conv_id), cfg)


def leave(conv_id, user_id):
    """The user ends the conversation (explicit offline)."""
    user_gone(conv_id, "user-left", explicit=True, user_id=user_id)
    dispatch()
    return view(conv_id)


def csat(conv_id, body):
    """The satisfaction survey after close (once)."""
    c = _users_conversation(conv_id, body["user_id"])
    if c.state != "closed":
        raise Problem(409, "conversation-open", "Conversation open", "rate the service after it ends")
    now = clock.now()
    with write_transaction():
        n = (ServiceConversation.update(csat_score=body["score"], csat_comment=body.get("comment", ""), csat_at=now)
             .where((ServiceConversation.id == c.id) & ServiceConversation.csat_score.is_null()).execute())
        if not n:
            raise Problem(409, "csat-given", "Already rated", "this conversation was rated already")
        conv = _locked(ServiceConversation.select().where(ServiceConversation.id == c.id)).get()
        ev = live.append(conv, "csat", "user", {"score": body["score"], "comment": body.get("comment", "")},
                         staff_no=c.agent or c.closed_by, now=now)
    live.publish([ev])
    return conversation_dict(get_conversation(c.id))


def decisions(conv_id):
    from app.policy import decisions as dlog
    get_conversation(conv_id)
    return dlog.for_subject(f"service:conversation:{conv_id}")
