"""Webhooks: URLs checked at creation, one bad receiver never blocks the others, dead after retries,
deactivation drops pending deliveries, one POST per claim, secrets encrypted at rest."""
import datetime as dt
import http.server
import socket
import threading
import time
import uuid

import pytest

from app.platform.clock import now as utcnow
from app.models.outbox import OutboxDelivery, Webhook
from app.platform import crypto, outbox
from tests.api.test_outbox import Receiver


@pytest.fixture()
def receiver():
    r = Receiver(fail=0)
    yield r
    r.close()


def _topic():
    return f"test.{uuid.uuid4().hex[:10]}"


@pytest.mark.parametrize("url", ["http://a\u0003b/", "http://a b/", "http://exa\u0000mple.com/", "http:///nohost",
                                 "ftp://example.com/", "http://例子.测试/", "http://user:pw@example.com/",
                                 "https://example.com:99999/"])
def test_bad_urls_are_refused_at_creation(http, url):
    r = http.post("/v1/webhooks", json={"name": "bad", "url": url})
    assert r.status_code == 422 and r.json()["code"] in ("invalid-url", "validation-failed"), (url, r.text)


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/x", "http://localhost/x", "http://10.1.2.3/x",
                                 "http://[::1]/x", "http://169.254.169.254/latest", "http://192.168.0.1/",
                                 "http://0.0.0.0/", "http://[::ffff:127.0.0.1]/"])
def test_private_targets_are_refused_unless_configured(app, http, monkeypatch, url):
    monkeypatch.setitem(app.config, "WEBHOOK_ALLOW_PRIVATE", False)
    r = http.post("/v1/webhooks", json={"name": "private", "url": url})
    assert r.status_code == 422 and r.json()["code"] == "invalid-url", r.text
    assert "PATRON_WEBHOOK_ALLOW_PRIVATE" in r.json()["detail"]
    monkeypatch.setitem(app.config, "WEBHOOK_ALLOW_PRIVATE", True)
    r = http.post("/v1/webhooks", json={"name": "private", "url": url, "topics": _topic()})
    assert r.status_code == 201, r.text


def test_a_name_resolving_to_a_private_address_is_not_posted(db_conn, receiver):
    topic = _topic()
    hook, _ = outbox.create_webhook("named", receiver.url.replace("127.0.0.1", "localhost"), topics=topic,
                                    allow_private=True)
    mid = outbox.publish(topic, {"x": 1})
    outbox.deliver_due(now=utcnow(), allow_private=False)
    d = OutboxDelivery.get(OutboxDelivery.message == mid)
    assert d.attempts == 1 and "private address" in d.last_error and receiver.requests == []


def test_a_receiver_whose_url_cannot_even_be_posted_never_blocks_the_others(db_conn, receiver):
    topic = _topic()
    bad, _ = outbox.create_webhook("bad", "http://127.0.0.1:9/x", topics=topic)
    # a row written before creation-time checks existed: http.client raises InvalidURL on it
    Webhook.update(url="http://a\u0003b/").where(Webhook.id == bad.id).execute()
    outbox.create_webhook("good", receiver.url, topics=topic)
    ids = [outbox.publish(topic, {"i": i}) for i in range(3)]
    now = utcnow()
    for i in range(3):
        outbox.deliver_due(now=now + dt.timedelta(hours=i), max_attempts=3, limit=1000)
    assert sorted(int(h["Patron-Message-Id"]) for h, _ in receiver.requests) == ids
    dead = list(OutboxDelivery.select().where((OutboxDelivery.webhook == bad.id)))
    assert [(d.status, d.attempts) for d in dead] == [("dead", 3)] * 3
    assert all("InvalidURL" in d.last_error or "invalid-url" in d.last_error.lower() or "URL" in d.last_error
               for d in dead)


def test_deactivating_a_webhook_drops_its_pending_deliveries(http, db_conn, receiver):
    topic = _topic()
    r = http.post("/v1/webhooks", json={"name": "gone", "url": receiver.url, "topics": topic})
    hook_id = r.json()["id"]
    mid = outbox.publish(topic, {"x": 1})
    assert http.delete(f"/v1/webhooks/{hook_id}").status_code == 200
    assert OutboxDelivery.get(OutboxDelivery.message == mid).status == "dropped"
    # also rows that were pending when their hook was deactivated some other way
    r = http.post("/v1/webhooks", json={"name": "gone2", "url": receiver.url, "topics": topic})
    mid2 = outbox.publish(topic, {"x": 2})
    Webhook.update(active=False).where(Webhook.id == r.json()["id"]).execute()
    outbox.deliver_due(now=utcnow() + dt.timedelta(minutes=5), limit=1000)
    assert OutboxDelivery.get(OutboxDelivery.message == mid2).status == "dropped"
    assert receiver.requests == []


class Dribbler:
    """A receiver that answers one byte every ``gap`` seconds: each read is quick, the whole POST is not."""

    def __init__(self, gap):
        self.gap = gap
        self.posts = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.posts += 1
            threading.Thread(target=self._dribble, args=(conn,), daemon=True).start()

    def _dribble(self, conn):
        try:
            conn.recv(65536)
            for ch in b"HTTP/1.1 204 No Content\r\nX-Slow: " + b"y" * 1000:
                if self.stop.is_set():
                    return
                conn.sendall(bytes([ch]))
                time.sleep(self.gap)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self):
        self.stop.set()
        self.sock.close()


def test_a_dribbling_receiver_is_cut_off_within_the_lease_and_posted_once_per_claim(app, db_conn):
    from tests.jobs.test_tickets_sla_watch import run_concurrently
    slow = Dribbler(gap=0.2)
    try:
        topic = _topic()
        outbox.create_webhook("slow", slow.url, topics=topic)
        mid = outbox.publish(topic, {"x": 1})
        now = utcnow()
        started = time.monotonic()
        # two workers at once, a 1 s POST deadline: one claims and posts, the other finds nothing due
        run_concurrently(app, lambda: outbox.deliver_due(now=now, timeout=1, lease_seconds=1, limit=1000))
        elapsed = time.monotonic() - started
        d = OutboxDelivery.get(OutboxDelivery.message == mid)
        assert slow.posts == 1 and d.attempts == 1 and d.status == "pending", (slow.posts, d.attempts)
        assert elapsed < 10, elapsed  # cut off at ~1 s, not after 1,000 slow bytes
        # the lease was stretched past the POST deadline (2 x timeout + 5 s), not the 1 s asked for
        assert d.next_attempt_at >= now + dt.timedelta(seconds=outbox.BACKOFF_SECONDS[0])
    finally:
        slow.close()


def test_secrets_are_encrypted_at_rest_and_still_sign(http, db_conn, receiver):
    topic = _topic()
    r = http.post("/v1/webhooks", json={"name": "enc", "url": receiver.url, "topics": topic,
                                        "secret": "s" * 40})
    secret = r.json()["secret"]
    stored = Webhook.get_by_id(r.json()["id"]).secret
    assert stored.startswith("fernet:") and secret not in stored and crypto.decrypt(stored) == secret
    outbox.publish(topic, {"x": 1})
    outbox.deliver_due(now=utcnow(), limit=1000)
    headers, body = receiver.requests[-1]
    assert outbox.verify(secret, headers["Patron-Timestamp"], body, headers["Patron-Signature"])


def test_key_rotation_and_the_migration_of_plain_rows(app, db_conn, tmp_path):
    from cryptography.fernet import Fernet

    from app.db import db
    from app.migrations import m0402_webhook_secrets
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    try:
        crypto.configure(old, str(tmp_path), app)
        hook, _ = outbox.create_webhook("rot", "http://127.0.0.1:9/x", topics=_topic(), secret="r" * 32)
        plain = Webhook.create(name="legacy", url="http://127.0.0.1:9/y", secret="p" * 32, topics=_topic())
        assert m0402_webhook_secrets.encrypt_plain(db) >= 1  # what the migration does to existing rows
        assert crypto.decrypt(Webhook.get_by_id(plain.id).secret) == "p" * 32
        crypto.configure(f"{new} {old}", str(tmp_path), app)  # new key first, old still decrypts
        assert crypto.decrypt(Webhook.get_by_id(hook.id).secret) == "r" * 32
        # rows of other tests (under keys not given here) are reported, never overwritten
        changed, unreadable = outbox.rotate_secrets()
        assert changed >= 2 and hook.id not in unreadable and plain.id not in unreadable
        crypto.configure(new, str(tmp_path), app)  # old key dropped: rotated rows still decrypt
        assert crypto.decrypt(Webhook.get_by_id(hook.id).secret) == "r" * 32
        assert crypto.decrypt(Webhook.get_by_id(plain.id).secret) == "p" * 32
    finally:
        Webhook.update(active=False).where(Webhook.name.in_(["rot", "legacy"])).execute()
        crypto.configure(app.config["SECRET_KEYS"], app.instance_path, app)
