"""Outbox: webhook deliveries are signed, retried with backoff while the receiver fails, delivered once it recovers."""
import datetime as dt
import http.server
import json
import threading
import uuid

import pytest


from app.platform import clock
from app.models.outbox import OutboxAttempt, OutboxDelivery
from app.platform import outbox


class Receiver:
    """A local HTTP receiver that fails the first ``fail`` requests with 500, then answers 204."""

    def __init__(self, fail):
        self.fail = fail
        self.requests = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server API
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((dict(self.headers), body))
                code = 500 if len(receiver.requests) <= receiver.fail else 204
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


@pytest.fixture()
def receiver():
    r = Receiver(fail=2)
    yield r
    r.close()


def _my(message_id):
    return OutboxDelivery.get(OutboxDelivery.message == message_id)


def test_delivery_retried_until_receiver_recovers(http, db_conn, receiver):
    topic = f"test.{uuid.uuid4().hex[:10]}"
    r = http.post("/v1/webhooks", json={"name": "test", "url": receiver.url, "topics": f"{topic}.*"})
    assert r.status_code == 201, r.text
    secret = r.json()["secret"]
    mid = outbox.publish(f"{topic}.happened", {"n": 1, "文字": "中文"}, subject="test:1", dedupe_key=f"{topic}:1")
    assert outbox.publish(f"{topic}.happened", {"n": 1}, dedupe_key=f"{topic}:1") is None  # deduped

    now = clock.now()
    outbox.deliver_due(now=now)
    d = _my(mid)
    assert (d.status, d.attempts, d.last_status) == ("pending", 1, 500)
    assert d.next_attempt_at == now + dt.timedelta(seconds=outbox.BACKOFF_SECONDS[0])
    outbox.deliver_due(now=now + dt.timedelta(seconds=1))  # not due yet: no new attempt
    assert _my(mid).attempts == 1 and len(receiver.requests) == 1

    later = now + dt.timedelta(seconds=outbox.BACKOFF_SECONDS[0])
    outbox.deliver_due(now=later)  # second failure, backs off longer
    d = _my(mid)
    assert (d.status, d.attempts) == ("pending", 2)
    assert d.next_attempt_at == later + dt.timedelta(seconds=outbox.BACKOFF_SECONDS[1])

    outbox.deliver_due(now=d.next_attempt_at)  # receiver has recovered
    d = _my(mid)
    assert (d.status, d.attempts, d.last_status) == ("delivered", 3, 204)
    outbox.deliver_due(now=d.next_attempt_at + dt.timedelta(hours=1))
    assert len(receiver.requests) == 3  # delivered: never sent again

    attempts = [(a.status_code, a.error) for a in OutboxAttempt.select().where(OutboxAttempt.delivery == d.id)
                .order_by(OutboxAttempt.id)]
    assert attempts == [(500, "HTTP 500"), (500, "HTTP 500"), (204, None)]
    # every attempt carries the same message id and a valid signature
    for headers, body in receiver.requests:
        assert headers["Patron-Message-Id"] == str(mid)
        assert outbox.verify(secret, headers["Patron-Timestamp"], body, headers["Patron-Signature"])
        envelope = json.loads(body)
        assert envelope["id"] == mid and envelope["data"]["文字"] == "中文"
    r = http.get(f"/v1/outbox/deliveries?message_id={mid}")
    assert r.status_code == 200 and r.json()["items"][0]["status"] == "delivered"
    # newest first, a page at a time: the cursor goes on past the last row
    everyone = http.get("/v1/outbox/deliveries", params={"limit": 5}).json()["items"]
    seen, cursor = [], None
    for _ in everyone:
        page = http.get("/v1/outbox/deliveries", params={"limit": 1, **({"cursor": cursor} if cursor else {})}).json()
        seen += [d["id"] for d in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert cursor == seen[-1]
    assert seen == [d["id"] for d in everyone]
    r = http.get(f"/v1/outbox/deliveries/{d.id}/attempts")
    assert [a["status_code"] for a in r.json()["items"]] == [500, 500, 204]


def test_unreachable_receiver_goes_dead_after_max_attempts(http, db_conn):
    topic = f"test.{uuid.uuid4().hex[:10]}"
    hook, _ = outbox.create_webhook("dead", "http://127.0.0.1:9/nothing", topics=topic)
    mid = outbox.publish(topic, {"x": 1})
    now = clock.now()
    for i in range(3):
        outbox.deliver_due(now=now + dt.timedelta(hours=i), max_attempts=3, timeout=2)
    d = _my(mid)
    assert d.status == "dead" and d.attempts == 3 and d.last_status is None and "Error" in d.last_error


def test_concurrent_workers_post_each_delivery_once(app, db_conn, receiver):
    from tests.jobs.test_tickets_sla_watch import run_concurrently
    receiver.fail = 0
    topic = f"test.{uuid.uuid4().hex[:10]}"
    outbox.create_webhook("conc", receiver.url, topics=topic)
    ids = [outbox.publish(topic, {"i": i}) for i in range(20)]
    now = clock.now()
    run_concurrently(app, lambda: outbox.deliver_due(now=now, limit=200))
    got = sorted(int(h["Patron-Message-Id"]) for h, _ in receiver.requests)
    assert got == sorted(ids)  # each once: claims hide a delivery from the other worker


def test_webhook_url_validated(http):
    r = http.post("/v1/webhooks", json={"name": "x", "url": "ftp://nope"})
    assert r.status_code == 422 and r.json()["code"] == "validation-failed"


def test_prune_deletes_settled_old_messages_only(db_conn):
    from app.models.outbox import OutboxMessage
    topic = f"test.{uuid.uuid4().hex[:10]}"
    outbox.create_webhook("prune", "http://127.0.0.1:9/x", topics=topic)
    pending = outbox.publish(topic, {"p": 1})
    settled = outbox.publish(topic, {"p": 2})
    OutboxDelivery.update(status="delivered").where(OutboxDelivery.message == settled).execute()
    no_receiver = outbox.publish(f"{topic}.none", {"p": 3})
    outbox.prune(older_than_days=1, now=clock.now() + dt.timedelta(days=2))
    left = {m.id for m in OutboxMessage.select().where(OutboxMessage.id.in_([pending, settled, no_receiver]))}
    assert left == {pending}
    outbox.prune(older_than_days=1)
    assert OutboxMessage.get_or_none(OutboxMessage.id == pending) is not None
