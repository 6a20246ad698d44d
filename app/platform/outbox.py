"""Generic outbox: publish in the caller's transaction, fan out to webhooks, deliver signed, retried, recorded."""
import contextlib
import datetime as dt
import fnmatch
import hashlib
import hmac
import http.client
import ipaddress
import json
import logging
import re
import secrets
import socket
import ssl
import threading
import time
from urllib.parse import urlsplit

from app.platform import clock, paging
from app.db import db, for_update, is_postgres, transactional, write_transaction
from app.errors import Problem, not_found

from app.models.outbox import OutboxAttempt, OutboxDelivery, OutboxMessage, Webhook
from app.platform import crypto
from app.platform import sql as fastsql
from app.platform.timefmt import iso

log = logging.getLogger(__name__)

# Seconds to wait before attempt n+1 (the last value repeats); then the delivery is dead.
BACKOFF_SECONDS = (10, 30, 120, 600, 1800, 3600, 3600, 3600, 3600, 3600)
MAX_ATTEMPTS = 12
# A claimed delivery is invisible to other workers for this long; a crash mid-POST retries after it.
# Deliveries are claimed one at a time, right before their POST, and a POST is cut off after
# TIMEOUT_SECONDS in total: the lease always outlives the POST it covers, so lease timing never
# makes a second worker post the same delivery.
LEASE_SECONDS = 60
TIMEOUT_SECONDS = 10
assert TIMEOUT_SECONDS * 2 < LEASE_SECONDS


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


def _allow_private(allow_private):
    if allow_private is not None:
        return allow_private
    from flask import current_app, has_app_context
    return bool(has_app_context() and current_app.config.get("WEBHOOK_ALLOW_PRIVATE"))


def _private(address):
    ip = ipaddress.ip_address(address.split("%")[0])
    if getattr(ip, "ipv4_mapped", None):
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def _invalid_url(detail):
    return Problem(422, "invalid-url", "Invalid URL", detail)


def check_url(url, allow_private=None):
    """A webhook URL's (scheme, host, port) or 422 ``invalid-url``.

    http(s) only, a host, printable ASCII (no control characters or spaces: ``http.client`` refuses
    them at delivery), and unless WEBHOOK_ALLOW_PRIVATE no loopback/private/link-local address or
    ``localhost`` (names are resolved again before every POST, see ``_post``).
    """
    if not isinstance(url, str) or not re.fullmatch(r"[\x21-\x7e]{1,1000}", url):
        raise _invalid_url("webhook URLs are printable ASCII without spaces or control characters "
                           "(percent-encode the rest)")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise _invalid_url(f"not a URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise _invalid_url("webhook URLs must be http:// or https://")
    host = parts.hostname
    if not host or parts.username or parts.password:
        raise _invalid_url("webhook URLs need a host (and no user:password@)")
    if not re.fullmatch(r"[A-Za-z0-9.\-:\[\]%]+", parts.netloc.rsplit("@", 1)[-1]):
        raise _invalid_url(f"bad host {parts.netloc!r}")
    if not _allow_private(allow_private):
        try:
            private = _private(host)
        except ValueError:  # a name: only the obvious ones here; its addresses are checked per POST
            private = host.lower().rstrip(".") == "localhost" or host.lower().endswith(".localhost")
        if private:
            raise _invalid_url(f"{host} is a loopback/private address (set PATRON_WEBHOOK_ALLOW_PRIVATE=true "
                               "to allow receivers on the local network)")
    return parts.scheme, host, port or (443 if parts.scheme == "https" else 80)


def create_webhook(name, url, topics="*", secret=None, allow_private=None):
    """Register a webhook receiver; returns (Webhook, secret) — the secret signs every delivery.

    The secret is stored encrypted (``app.platform.crypto``); it is shown once, here.
    """
    check_url(url, allow_private)
    secret = secret or secrets.token_urlsafe(24)
    hook = Webhook.create(name=name, url=url, secret=crypto.encrypt(secret), topics=topics or "*")
    return hook, secret


@transactional()
def deactivate_webhook(webhook_id):
    """Stop a webhook: its pending deliveries are dropped (status ``dropped``), none is posted again."""
    n = Webhook.update(active=False).where(Webhook.id == webhook_id).execute()
    if not n:
        raise not_found("webhook", webhook_id)
    OutboxDelivery.update(status="dropped", last_error="webhook deactivated").where(
        (OutboxDelivery.webhook == webhook_id) & (OutboxDelivery.status == "pending")).execute()


def rotate_secrets():
    """Re-encrypt every webhook secret under the first configured key.

    Rotation: put the new key first in PATRON_SECRET_KEYS (keep the old one after it), restart, run
    ``patron secrets rotate``, then drop the old key.

    Returns:
        (rows re-encrypted, ids of webhooks whose secret none of the configured keys opens).
    """
    changed, unreadable = 0, []
    with db.connection_context():
        for hook in Webhook.select(Webhook.id, Webhook.secret):
            try:
                new = crypto.rotate(hook.secret)
            except ValueError:
                unreadable.append(hook.id)
                continue
            if new != hook.secret:
                Webhook.update(secret=new).where(Webhook.id == hook.id).execute()
                changed += 1
    return changed, unreadable


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
def _claim(now, limit, lease_seconds, skip=()):
    # deliveries of a webhook deactivated meanwhile (or before this fix) are dropped, never claimed
    inactive = Webhook.select(Webhook.id).where(Webhook.active == False)  # noqa: E712 - SQL
    OutboxDelivery.update(status="dropped", last_error="webhook deactivated").where(
        (OutboxDelivery.status == "pending") & OutboxDelivery.webhook.in_(inactive)).execute()
    query = (OutboxDelivery.select(OutboxDelivery.id)
             .where((OutboxDelivery.status == "pending") & (OutboxDelivery.next_attempt_at <= now))
             .order_by(OutboxDelivery.next_attempt_at, OutboxDelivery.id).limit(limit))
    if skip:
        query = query.where(OutboxDelivery.id.not_in(list(skip)))
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


def _post(item, timeout, allow_private=False):
    """POST one delivery; (status or None, error or None, ms). Never raises: whatever goes wrong with
    this receiver (bad URL, DNS, TLS, a hung or dribbling server) is this delivery's failed attempt.

    The whole POST (connect, send, headers) is cut off after ``timeout`` seconds in total.
    """
    started = time.monotonic()
    try:
        status, error = _send(item, timeout, allow_private)
    except Exception as exc:  # noqa: BLE001 - one receiver's failure must never stop the others
        status, error = None, f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
    return status, error, int((time.monotonic() - started) * 1000)


def _send(item, timeout, allow_private):
    envelope = {"id": item["message_id"], "topic": item["topic"], "subject": item["subject"],
                "created_at": iso(item["created_at"]), "data": json.loads(item["payload"])}
    body = _dumps(envelope).encode()
    ts = str(int(time.time()))
    scheme, host, port = check_url(item["url"], allow_private)
    if not allow_private:  # the name may resolve somewhere private (or have been re-pointed there)
        for *_, sockaddr in socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP):
            if _private(sockaddr[0]):
                return None, f"refused: {host} resolves to a private address {sockaddr[0]}"
    parts = urlsplit(item["url"])
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if scheme == "https":
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=ssl.create_default_context())
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    # the socket timeout bounds each read; this bounds the whole POST (a receiver dribbling a byte
    # every few seconds would otherwise outlive the lease)
    cutoff = threading.Timer(timeout, _abort, args=(conn,))
    cutoff.daemon = True
    cutoff.start()
    try:
        conn.request("POST", path, body=body, headers={
            "Content-Type": "application/json",
            "User-Agent": "patron-outbox/1",
            "Patron-Message-Id": str(item["message_id"]),
            "Patron-Topic": item["topic"],
            "Patron-Timestamp": ts,
            "Patron-Delivery-Attempt": str(item["attempt"]),
            "Patron-Signature": sign(crypto.decrypt(item["secret"]), ts, body),
        })
        resp = conn.getresponse()
        status = resp.status
    finally:
        cutoff.cancel()
        conn.close()
    return status, None if 200 <= status < 300 else f"HTTP {status}"


def _abort(conn):
    sock = conn.sock
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


@transactional()
def _record(item, status, error, duration_ms, now, schedule, max_attempts):
    OutboxAttempt.create(delivery=item["id"], at=now, status_code=status, error=error, duration_ms=duration_ms)
    current = for_update(OutboxDelivery.select().where(OutboxDelivery.id == item["id"])).get()
    if current.status != "pending":
        return current.status  # settled meanwhile (e.g. dropped: its webhook was deactivated)
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
                schedule=BACKOFF_SECONDS, max_attempts=MAX_ATTEMPTS, allow_private=None):
    """Deliver every due pending delivery once (at-least-once overall; receivers dedupe by message id).

    Claims rows (a lease, so two workers never post the same delivery at once), posts outside any
    transaction, then records the attempt and either marks it delivered or schedules a retry with
    backoff (dead after ``max_attempts``).

    Args:
        now: naive-UTC instant (default: the clock).
        limit: deliveries per call.
        lease_seconds: how long a claim hides a delivery from other workers (at least 2 x timeout + 5).
        timeout: total seconds one POST may take.
        schedule: backoff seconds per attempt.
        max_attempts: attempts before a delivery is dead.
        allow_private: post to private/loopback addresses (default: the WEBHOOK_ALLOW_PRIVATE setting).

    Returns:
        dict of counts: delivered, retry, dead.
    """
    counts = {"delivered": 0, "retry": 0, "dead": 0}
    allow_private = _allow_private(allow_private)
    lease_seconds = max(lease_seconds, 2 * timeout + 5)  # the lease outlives the POST it covers
    seen = set()
    for _ in range(limit):
        # one claim per POST, taken just before it: the lease covers this POST only, not the
        # whole batch behind it
        claimed = _claim(now or clock.now(), 1, lease_seconds, skip=seen)
        if not claimed:
            break
        item = claimed[0]
        seen.add(item["id"])
        status, error, ms = _post(item, timeout, allow_private)
        try:
            outcome = _record(item, status, error, ms, now or clock.now(), schedule, max_attempts)
        except Exception:  # noqa: BLE001 - a delivery that cannot be recorded retries after its lease
            log.exception("outbox delivery %s: recording the attempt failed", item["id"])
            continue
        if outcome in counts:
            counts[outcome] += 1
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



def deliveries(message_id=None, status=None, limit=100, cursor=None):
    """Deliveries, newest first (keyset on id), optionally for one message or in one status.

    Returns:
        (items, next_cursor or None).
    """
    q = OutboxDelivery.select()
    if message_id is not None:
        q = q.where(OutboxDelivery.message == message_id)
    if status:
        q = q.where(OutboxDelivery.status == status)
    rows, nxt = paging.keyset(q, OutboxDelivery.id, cursor, limit)
    return [serialize_delivery(d) for d in rows], nxt


def attempts(delivery_id):
    return [{"at": iso(a.at), "status_code": a.status_code, "error": a.error, "duration_ms": a.duration_ms}
            for a in OutboxAttempt.select().where(OutboxAttempt.delivery == delivery_id).order_by(OutboxAttempt.id)]

