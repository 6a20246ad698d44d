"""Generic outbox: publish in the caller's transaction, fan out to webhooks, deliver signed, retried, recorded."""
import contextlib
import datetime as dt
import fnmatch
import hashlib
import hmac
import json
import logging
import secrets
import time
import urllib.error
import urllib.request

from app.platform import clock
from app.db import db, for_update, is_postgres, transactional, write_transaction
from app.errors import Problem, not_found

from app.models.outbox import OutboxAttempt, OutboxDelivery, OutboxMessage, Webhook
from app.platform import sql as fastsql
from app.platform.timefmt import iso

log = logging.getLogger(__name__)

# Seconds to wait before attempt n+1 (the last value repeats); then the delivery is dead.
BACKOFF_SECONDS = (10, 30, 120, 600, 1800, 3600, 3600, 3600, 3600, 3600)
MAX_ATTEMPTS = 12
# A claimed delivery is invisible to other workers for this long; a crash mid-POST retries after it.
LEASE_SECONDS = 60
TIMEOUT_SECONDS = 10


def _dumps(value):
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def _matches(patterns, topic):
    return any(fnmatch.fnmatchcase(topic, p) for p in patterns.split())


def publish(topic, payload, subject=None, dedupe_key=None):
    """Write one message (call inside the transaction of the change it announces).

    Args:
        topic: dotted name, e.g. ``ticket.escalated``.
        payload: JSON-serialisable dict.
        subject: what it is about, e.g. ``ticket:42``.
        dedupe_key: same key -> one message (later publishes are ignored).

    Returns:
        the message id, or None when dedupe_key was already used.
    """
    ids = publish_many([(topic, payload, subject, dedupe_key)])
    return ids[0] if ids else None


def publish_many(items):
    """Publish many ``(topic, payload, subject, dedupe_key)`` tuples; returns the new message ids."""
    if not items:
        return []
    # inside the caller's transaction (the usual case) no savepoint is needed: all or nothing anyway
    with contextlib.nullcontext() if db.in_transaction() else write_transaction():
        keys = [i[3] for i in items if i[3]]
        taken = set()
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            taken |= {m.dedupe_key for m in OutboxMessage.select(OutboxMessage.dedupe_key)
                      .where(OutboxMessage.dedupe_key.in_(chunk))}
        now = clock.now()
        rows, seen = [], set()
        for topic, payload, subject, key in items:
            if key and (key in taken or key in seen):
                continue
            seen.add(key)
            rows.append((topic, payload, subject, key))
        values = [{"topic": topic, "payload": _dumps(payload), "subject": subject, "dedupe_key": key,
                   "created_at": now} for topic, payload, subject, key in rows]
        created = []  # (id, topic): RETURNING (PostgreSQL, SQLite >= 3.35) says which id got which topic
        for start in range(0, len(values), 500):
            created += fastsql.insert(OutboxMessage, values[start:start + 500], returning=("id", "topic"))
        ids = [mid for mid, _ in created]
        hooks = _active_hooks()
        deliveries = [{"message": mid, "webhook": hid, "next_attempt_at": now, "created_at": now}
                      for mid, topic in created for hid, topics in hooks if _matches(topics, topic)]
        for start in range(0, len(deliveries), 500):
            fastsql.insert(OutboxDelivery, deliveries[start:start + 500])
    return ids


def _active_hooks():
    """(id, topics) of the active webhooks: read on every publish, so a new hook sees the next message."""
    sql = _HOOKS_SQL.get(type(db.obj))
    if sql is None:
        sql = _HOOKS_SQL[type(db.obj)] = (
            f'SELECT "{Webhook.id.column_name}", "{Webhook.topics.column_name}" FROM "{Webhook._meta.table_name}" '
            f'WHERE "{Webhook.active.column_name}" = {db.obj.param} ORDER BY "{Webhook.id.column_name}"')
    return db.execute_sql(sql, [True]).fetchall()


_HOOKS_SQL = {}


def create_webhook(name, url, topics="*", secret=None):
    """Register a webhook receiver; returns (Webhook, secret) — the secret signs every delivery."""
    if not url.startswith(("http://", "https://")):
        raise Problem(422, "invalid-url", "Invalid URL", "webhook URLs must be http:// or https://")
    secret = secret or secrets.token_urlsafe(24)
    hook = Webhook.create(name=name, url=url, secret=secret, topics=topics or "*")
    return hook, secret


def deactivate_webhook(webhook_id):
    n = Webhook.update(active=False).where(Webhook.id == webhook_id).execute()
    if not n:
        raise not_found("webhook", webhook_id)


def sign(secret, timestamp, body):
    """The ``Patron-Signature`` value: ``v1=`` hex HMAC-SHA256 of ``"<timestamp>.<body>"``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"v1={mac}"


def verify(secret, timestamp, body, signature):
    """True when ``signature`` is the signature of ``body`` at ``timestamp`` (for receivers and tests)."""
    return hmac.compare_digest(sign(secret, timestamp, body), signature or "")


def _backoff(attempts, schedule):
    return schedule[min(attempts, len(schedule)) - 1]


@transactional()
def _claim(now, limit, lease_seconds):
    query = (OutboxDelivery.select(OutboxDelivery.id)
             .where((OutboxDelivery.status == "pending") & (OutboxDelivery.next_attempt_at <= now))
             .order_by(OutboxDelivery.next_attempt_at, OutboxDelivery.id).limit(limit))
    if is_postgres():
        query = query.for_update(skip_locked=True)
    ids = [d.id for d in query]
    if not ids:
        return []
    OutboxDelivery.update(next_attempt_at=now + dt.timedelta(seconds=lease_seconds),
                          attempts=OutboxDelivery.attempts + 1).where(OutboxDelivery.id.in_(ids)).execute()
    rows = (OutboxDelivery.select(OutboxDelivery, OutboxMessage, Webhook)
            .join(OutboxMessage).switch(OutboxDelivery).join(Webhook)
            .where(OutboxDelivery.id.in_(ids)))
    return [{"id": d.id, "attempt": d.attempts, "url": d.webhook.url, "secret": d.webhook.secret,
             "message_id": d.message.id, "topic": d.message.topic, "subject": d.message.subject,
             "created_at": d.message.created_at, "payload": d.message.payload} for d in rows]


def _post(item, timeout):
    envelope = {"id": item["message_id"], "topic": item["topic"], "subject": item["subject"],
                "created_at": iso(item["created_at"]), "data": json.loads(item["payload"])}
    body = _dumps(envelope).encode()
    ts = str(int(time.time()))
    req = urllib.request.Request(item["url"], data=body, method="POST", headers={
        "Content-Type": "application/json",
        "User-Agent": "patron-outbox/1",
        "Patron-Message-Id": str(item["message_id"]),
        "Patron-Topic": item["topic"],
        "Patron-Timestamp": ts,
        "Patron-Delivery-Attempt": str(item["attempt"]),
        "Patron-Signature": sign(item["secret"], ts, body),
    })
    started = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - URL is http(s) by creation check
            status, error = resp.status, None
    except urllib.error.HTTPError as exc:
        status, error = exc.code, f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        status, error = None, f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
    return status, error, int((time.monotonic() - started) * 1000)


@transactional()
def _record(item, status, error, duration_ms, now, schedule, max_attempts):
    OutboxAttempt.create(delivery=item["id"], at=now, status_code=status, error=error, duration_ms=duration_ms)
    current = for_update(OutboxDelivery.select().where(OutboxDelivery.id == item["id"])).get()
    if current.status != "pending":
        return current.status  # another worker's late success already settled it
    if status is not None and 200 <= status < 300:
        OutboxDelivery.update(status="delivered", delivered_at=now, last_status=status, last_error=None) \
            .where(OutboxDelivery.id == item["id"]).execute()
        return "delivered"
    dead = current.attempts >= max_attempts
    OutboxDelivery.update(
        status="dead" if dead else "pending", last_status=status, last_error=error,
        next_attempt_at=now + dt.timedelta(seconds=_backoff(current.attempts, schedule)),
    ).where(OutboxDelivery.id == item["id"]).execute()
    return "dead" if dead else "retry"


def deliver_due(now=None, limit=100, lease_seconds=LEASE_SECONDS, timeout=TIMEOUT_SECONDS,
                schedule=BACKOFF_SECONDS, max_attempts=MAX_ATTEMPTS):
    """Deliver every due pending delivery once (at-least-once overall; receivers dedupe by message id).

    Claims rows (a lease, so two workers never post the same delivery at once), posts outside any
    transaction, then records the attempt and either marks it delivered or schedules a retry with
    backoff (dead after ``max_attempts``).

    Args:
        now: naive-UTC instant (default: the clock).
        limit: deliveries per call.
        lease_seconds: how long a claim hides a delivery from other workers.
        timeout: HTTP timeout per post.
        schedule: backoff seconds per attempt.
        max_attempts: attempts before a delivery is dead.

    Returns:
        dict of counts: delivered, retry, dead.
    """
    now = now or clock.now()
    counts = {"delivered": 0, "retry": 0, "dead": 0}
    for item in _claim(now, limit, lease_seconds):
        status, error, ms = _post(item, timeout)
        outcome = _record(item, status, error, ms, now, schedule, max_attempts)
        counts[outcome if outcome in counts else "delivered"] += 1
        if error:
            log.info("outbox delivery %s to %s failed: %s", item["id"], item["url"], error)
    return counts


@transactional()
def prune(older_than_days=30, now=None):
    """Delete messages older than the cutoff whose deliveries are all settled (delivered or dead).

    Returns:
        number of messages deleted (their deliveries and attempts go with them).
    """
    cutoff = (now or clock.now()) - dt.timedelta(days=older_than_days)
    pending = OutboxDelivery.select(OutboxDelivery.message).where(OutboxDelivery.status == "pending")
    old = (OutboxMessage.select(OutboxMessage.id)
           .where((OutboxMessage.created_at < cutoff) & OutboxMessage.id.not_in(pending)))
    deliveries = OutboxDelivery.select(OutboxDelivery.id).where(OutboxDelivery.message.in_(old))
    OutboxAttempt.delete().where(OutboxAttempt.delivery.in_(deliveries)).execute()
    OutboxDelivery.delete().where(OutboxDelivery.message.in_(old)).execute()
    return OutboxMessage.delete().where(OutboxMessage.id.in_(old)).execute()


def serialize_delivery(d):
    return {"id": d.id, "message_id": d.message_id, "webhook_id": d.webhook_id, "status": d.status,
            "attempts": d.attempts, "next_attempt_at": iso(d.next_attempt_at),
            "last_status": d.last_status, "last_error": d.last_error, "delivered_at": iso(d.delivered_at)}



def deliveries(message_id=None, status=None, limit=100):
    """Deliveries (newest first), optionally for one message or in one status."""
    q = OutboxDelivery.select().order_by(OutboxDelivery.id.desc()).limit(limit)
    if message_id is not None:
        q = q.where(OutboxDelivery.message == message_id)
    if status:
        q = q.where(OutboxDelivery.status == status)
    return [serialize_delivery(d) for d in q]


def attempts(delivery_id):
    return [{"at": iso(a.at), "status_code": a.status_code, "error": a.error, "duration_ms": a.duration_ms}
            for a in OutboxAttempt.select().where(OutboxAttempt.delivery == delivery_id).order_by(OutboxAttempt.id)]

