"""SLA watch and webhook delivery on real RQ workers: two worker processes, each warning/escalation once."""
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from app.models.outbox import OutboxDelivery
from app.models.tickets import Ticket
from app.platform import outbox
from tests.api.test_outbox import Receiver
from tests.conftest import TEST_SECRET_KEYS
from tests.jobs.test_tickets_sla_watch import make_ticket, sla_rows

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.redis


def start_worker(database_url, redis_url, queue_name):
    # the worker decrypts webhook secrets with the test app's key and posts to the loopback receiver
    env = dict(os.environ, PATRON_DATABASE_URL=database_url, PATRON_REDIS_URL=redis_url, PYTHONPATH=str(ROOT),
               PATRON_LOG_LEVEL="WARNING", PATRON_SECRET_KEYS=TEST_SECRET_KEYS, PATRON_WEBHOOK_ALLOW_PRIVATE="true")
    return subprocess.Popen([sys.executable, "-m", "app.cli", "worker", "--burst", "--queues", queue_name],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_real_workers_warn_and_escalate_once(app, db_conn, redis_url, database_url):
    import jobs
    from jobs import RUNNER
    warn = make_ticket(created_ago_minutes=13)  # due for a warning now
    breach = make_ticket(created_ago_minutes=20)  # past due now
    receiver = Receiver(fail=0)
    topic = f"test.{uuid.uuid4().hex[:10]}"
    outbox.create_webhook("worker-test", receiver.url, topics=topic)
    mid = outbox.publish(topic, {"hello": "worker"})
    queue_name = f"tickets-test-{uuid.uuid4().hex[:8]}"
    q = jobs.queue(jobs.redis_connection(redis_url), queue_name)
    # four ticks' worth of watcher jobs (as if two schedulers fired twice), plus one delivery run
    for i in range(4):
        rq_id = f"jobs_tickets_sla_watch-test-{uuid.uuid4().hex}"
        q.enqueue_call(RUNNER, args=["jobs.tickets.sla_watch", rq_id, [], {}, None, "rq"], job_id=rq_id)
    rq_id = f"jobs_outbox_deliver_due-test-{uuid.uuid4().hex}"
    q.enqueue_call(RUNNER, args=["jobs.outbox.deliver_due", rq_id, [], {}, None, "rq"], job_id=rq_id)
    workers = [start_worker(database_url, redis_url, queue_name) for _ in range(2)]
    try:
        for w in workers:
            _, err = w.communicate(timeout=120)
            assert w.returncode == 0, err[-3000:]
    finally:
        receiver.close()
    assert sla_rows(warn.id) == [("warning", "first_response")]
    assert sla_rows(breach.id) == [("breach", "first_response")]
    assert Ticket.get_by_id(breach.id).escalation_level == 1
    assert OutboxDelivery.get(OutboxDelivery.message == mid).status == "delivered"
    assert [int(h["Patron-Message-Id"]) for h, _ in receiver.requests].count(mid) == 1
