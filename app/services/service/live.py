"""Live delivery of conversation events: written in order (``seq``), fanned out after commit.

Fan-out goes over Redis pub/sub when Redis is configured (every process hears every event) and
in-process otherwise. Streams never depend on the fan-out for correctness: they subscribe first,
then read the database from the client's cursor, and fill any gap from the database again.
"""
import collections
import hashlib
import json
import logging
import os
import secrets
import socket
import threading
import time

log = logging.getLogger(__name__)

_subs = collections.defaultdict(set)  # key ("c:<conversation id>" | "a:<staff_no>" | FLOOR_KEY) -> {_Sub}
FLOOR_KEY = "floor"  # every event: the supervisors' floor stream recomputes on any desk activity
_subs_lock = threading.Lock()
_listeners = {}  # (redis url, channel) -> thread
NODE_ID = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
os.register_at_fork(after_in_child=lambda: globals().update(
    NODE_ID=f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}", _listeners={}, _node_seen=[0.0]))
_node_seen = [0.0]


def _dumps(value):
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def event_dict(e):
    """An event row as the JSON clients see (``seq`` orders one conversation; ``id`` orders an agent's stream)."""
    return {"id": e.id, "conversation_id": e.conversation, "seq": e.seq, "kind": e.kind, "sender": e.sender,
            "audience": e.audience, "staff_no": e.staff_no, "body": json.loads(e.body),
            "at": e.created_at.isoformat() + "Z"}


def append(conv, kind, sender, body, audience="all", staff_no=None, now=None):
    """Write the next event of a conversation (the caller holds the conversation row in its transaction).

    Returns:
        the event as a dict (publish it after commit).
    """
    from app.models.service import ServiceEvent
    from app.platform import clock, sql as fastsql
    now = now or clock.now()
    conv.last_seq += 1
    fastsql.execute('UPDATE "service_conversation" SET "last_seq" = ? WHERE "id" = ?', (conv.last_seq, conv.id))
    row = {"conversation": conv.id, "seq": conv.last_seq, "kind": kind, "sender": sender, "audience": audience,
           "staff_no": staff_no if staff_no is not None else conv.agent, "body": _dumps(body), "created_at": now}
    event_id = fastsql.insert_one(ServiceEvent, row)
    return {"id": event_id, "conversation_id": conv.id, "seq": conv.last_seq, "kind": kind, "sender": sender,
            "audience": audience, "staff_no": row["staff_no"], "body": json.loads(row["body"]), "at": now.isoformat() + "Z"}


# --- fan-out -------------------------------------------------------------------------------------

class _Sub:
    def __init__(self, key):
        self.key = key
        self.items = collections.deque()
        self.ready = threading.Event()

    def push(self, ev):
        self.items.append(ev)
        self.ready.set()

    def wait(self, timeout):
        """Events delivered since the last call (waits up to ``timeout`` seconds for the first)."""
        if not self.items:
            self.ready.wait(timeout)
        self.ready.clear()
        out = []
        while self.items:
            out.append(self.items.popleft())
        return out

    def close(self):
        with _subs_lock:
            _subs[self.key].discard(self)
            if not _subs[self.key]:
                del _subs[self.key]


def _keys(ev):
    keys = [f"c:{ev['conversation_id']}", FLOOR_KEY]
    if ev.get("staff_no") and ev.get("audience") in ("all", "agent"):
        keys.append(f"a:{ev['staff_no']}")
    return keys


def _deliver(events):
    with _subs_lock:
        targets = [(s, ev) for ev in events for k in _keys(ev) for s in _subs.get(k, ())]
    for s, ev in targets:
        s.push(ev)


def channel(database_url):
    """The pub/sub channel of one database (Redis pub/sub ignores the db number: names must not collide)."""
    return "patron:service:" + hashlib.sha256(str(database_url).encode()).hexdigest()[:16]


def _config():
    """(Redis URL or None, database URL) of the app in context (every caller runs inside one)."""
    from flask import current_app, has_app_context
    if has_app_context():
        cfg = current_app.config
        return cfg.get("REDIS_URL") or None, cfg.get("DATABASE_URL")
    return os.environ.get("PATRON_REDIS_URL") or None, os.environ.get("PATRON_DATABASE_URL")


def publish(events):
    """Fan events out after their transaction committed (never raises: streams catch up from the database)."""
    events = [e for e in events if e]
    if not events:
        return
    from app import metrics  # noqa: F401  (kept light: no metric per event)
    url, database_url = _config()
    if not url:
        _deliver(events)
        return
    try:
        from app.platform import redis as platform_redis
        platform_redis.connection(url).publish(channel(database_url), _dumps({"events": events, "t": time.time()}))
    except Exception:  # a Redis hiccup delays live delivery; polling and reconnects still see the rows
        log.warning("service fan-out over Redis failed; clients catch up from the database", exc_info=True)
        _deliver(events)


def _listen(url, chan):
    import redis
    while True:
        try:
            conn = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=None,
                                        health_check_interval=30)
            ps = conn.pubsub(ignore_subscribe_messages=True)
            ps.subscribe(chan)
            while True:
                msg = ps.get_message(timeout=5.0)
                if msg and msg.get("type") == "message":
                    _deliver(json.loads(msg["data"])["events"])
        except Exception:  # reconnect: streams fill any gap from the database
            log.warning("service pub/sub listener reconnecting", exc_info=True)
            time.sleep(1)


def subscribe(key):
    """A subscription to ``c:<conversation id>``, ``a:<staff_no>`` or FLOOR_KEY; subscribe BEFORE reading the backlog."""
    url, database_url = _config()
    if url:
        chan = channel(database_url)
        with _subs_lock:
            if (url, chan) not in _listeners:
                t = threading.Thread(target=_listen, args=(url, chan), name="service-pubsub", daemon=True)
                _listeners[(url, chan)] = t
                t.start()
    s = _Sub(key)
    with _subs_lock:
        _subs[key].add(s)
    return s


def touch_node(force=False):
    """Record this process as a live-stream node (at most every 30 s); /readyz counts local-mode nodes."""
    now = time.monotonic()
    if not force and now - _node_seen[0] < 30:
        return
    _node_seen[0] = now
    from app.db import connection
    from app.models.service import ServiceNode
    from app.platform import clock
    url, _ = _config()
    try:
        with connection():
            (ServiceNode.insert(node_id=NODE_ID, mode="redis" if url else "local", seen_at=clock.now())
             .on_conflict(conflict_target=[ServiceNode.node_id],
                          update={ServiceNode.seen_at: clock.now(), ServiceNode.mode: "redis" if url else "local"})
             .execute())
    except Exception:  # readiness reporting must never break a stream
        log.debug("service node heartbeat failed", exc_info=True)


def readiness():
    """What /readyz says about live fan-out: ``redis``, ``local``, or a warning when several local processes run."""
    import datetime as dt
    from app.models.service import ServiceNode
    from app.platform import clock
    touch_node()
    url, _ = _config()
    if url:
        return "redis"
    try:
        since = clock.now() - dt.timedelta(seconds=90)
        n = ServiceNode.select().where((ServiceNode.mode == "local") & (ServiceNode.seen_at >= since)).count()
    except Exception:
        return "local"
    if n > 1:
        return (f"warning: {n} processes serve live service streams without Redis; each reaches only its own "
                f"clients (set PATRON_REDIS_URL)")
    return "local"
