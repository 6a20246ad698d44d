"""The presence sweep on a real RQ worker: an agent whose heartbeats stopped is timed out by the worker, and the
user hears it on their live stream through Redis pub/sub (the web process never looked at the agent)."""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import Http, make_token
from tests.service_factories import clean_floor, new_agent, read_sse, service_policy

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.redis


def test_worker_sweep_times_out_agent_and_user_hears_it_over_redis(app, server, database_url, redis_url, jobs_queue):
    import jobs
    from rq.job import Job
    clean_floor(app)
    # heartbeat_seconds is also the stream's keep-alive: 30 s keeps the web process from finding out itself
    with service_policy(app, calendar="always", assignment="pull", agent_timeout_seconds=2, heartbeat_seconds=30):
        api = Http(server, make_token(["service:write", "act-as"], "sweep-test"))
        agent = new_agent(app)
        hdr = {"Patron-Act-As": agent}
        assert api.post("/v1/service/agent/online", json={}, headers=hdr).status_code == 200
        r = api.post("/v1/service/conversations", json={"user_id": f"sweep-{os.getpid()}"})
        token, conv = r.json()["user_token"], r.json()["conversation"]
        assert api.post("/v1/service/agent/take", headers=hdr).json()["conversation"]["id"] == conv["id"]
        resp = requests.get(f"{server}/v1/service/conversations/{conv['id']}/stream", params={"token": token},
                            stream=True, timeout=60)
        try:
            read_sse(resp, lambda e: e["event"] == "assigned")
            time.sleep(2.5)  # the agent's heartbeats stop
            with app.app_context():
                ref = jobs.enqueue("jobs.service.sweep", seconds=1)
            env = dict(os.environ, PATRON_DATABASE_URL=database_url, PATRON_REDIS_URL=redis_url,
                       PYTHONPATH=str(ROOT), PATRON_LOG_LEVEL="WARNING")
            worker = subprocess.Popen([sys.executable, "-m", "app.cli", "worker", "--burst", "--queues", jobs_queue],
                                      cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            ev = read_sse(resp, lambda e: e["event"] == "requeued")[-1]
            _, err = worker.communicate(timeout=120)
            assert worker.returncode == 0, err[-3000:]
        finally:
            resp.close()
        assert ev["data"]["body"]["reason"] == "agent-timeout" and ev["data"]["body"]["next"] == "requeued"
        job = Job.fetch(ref.id, connection=jobs.redis_connection(redis_url), serializer=jobs.queue(
            jobs.redis_connection(redis_url), jobs_queue).serializer)
        result = job.return_value()
        assert result["status"] == "succeeded" and result["result"]["agents"] == 1
        view = api.get("/v1/service/agent", headers=hdr).json()
        assert view["status"] == "offline" and view["lock"] == "open" and view["serving"] == []
    clean_floor(app)


def test_sweep_inline_runs_for_its_window(app, db_conn):
    from jobs import service as service_jobs
    started = time.monotonic()
    out = service_jobs.sweep(seconds=0)
    assert out["sweeps"] == 1 and time.monotonic() - started < 10
