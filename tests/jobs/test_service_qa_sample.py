"""The QA sampling job on a real RQ worker: the shipped quality policy's strata, and a second run adds nothing."""
import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.service_factories import compensate, make_conversation, new_agent

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.redis


def test_worker_samples_a_day_once(app, database_url, redis_url, jobs_queue, db_conn):
    import jobs
    from rq.job import Job
    from app.models.service_ops import ServiceQaReview
    agent = new_agent(app, ("agent_l1",), "JQ")
    day = dt.date(2024, 7, 1)
    noon = dt.datetime(2024, 7, 1, 4, 0)  # 12:00 in Shanghai
    for i in range(12):  # routine, per agent: ceil(12 * 5%) = 1
        make_conversation(agent, noon + dt.timedelta(minutes=i))
    for i in range(2):  # compensated: all
        compensate(make_conversation(agent, noon + dt.timedelta(hours=1, minutes=i)), agent)
    with app.app_context():
        refs = [jobs.enqueue("jobs.service.qa_sample", day.isoformat()) for _ in range(2)]
    env = dict(os.environ, PATRON_DATABASE_URL=database_url, PATRON_REDIS_URL=redis_url, PYTHONPATH=str(ROOT),
               PATRON_LOG_LEVEL="WARNING")
    worker = subprocess.run([sys.executable, "-m", "app.cli", "worker", "--burst", "--queues", jobs_queue], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=300)
    assert worker.returncode == 0, worker.stderr[-3000:]
    conn = jobs.redis_connection(redis_url)
    serializer = jobs.queue(conn, jobs_queue).serializer
    results = [Job.fetch(r.id, connection=conn, serializer=serializer).return_value() for r in refs]
    assert [r["status"] for r in results] == ["succeeded", "succeeded"]
    assert sorted(r["result"]["created"] for r in results) == [0, 3]
    rows = list(ServiceQaReview.select().where(ServiceQaReview.period == day.isoformat()))
    assert sorted(r.stratum for r in rows) == ["compensated", "compensated", "routine"]
    assert all(r.agent == agent and r.source == "sample" and r.state == "assigned" for r in rows)
    ServiceQaReview.update(state="acknowledged").where(ServiceQaReview.period == day.isoformat()).execute()
