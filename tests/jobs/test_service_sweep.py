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
                ref = jobs.enqueue("jobs.service.sweep")
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


def test_sweep_is_one_pass_that_never_waits(app, db_conn, monkeypatch):
    """The sweep acts on what is due and returns: it never sleeps inside its run (it used to loop ~50 s)."""
    from jobs import service as service_jobs

    def no_sleep(seconds):
        raise AssertionError(f"the sweep waited {seconds} s inside its run")
    monkeypatch.setattr(time, "sleep", no_sleep)
    out = service_jobs.sweep()
    assert set(out) == {"agents", "users", "assigned"}


@pytest.mark.parametrize("sweep_first", [True, False])
def test_in_process_ticker_runs_other_jobs_every_minute_with_the_sweep_scheduled(app, db_conn, monkeypatch, sweep_first):
    """The embedded default's ticker thread, over six simulated minutes: every minute's tick runs the sweep AND the
    other every-minute jobs. Time is simulated: the loop's wait and any sleep inside a job advance the clock by what
    they would have waited, so a job that holds the ticker for most of a minute makes it miss the next minute."""
    import datetime as dt
    import uuid

    import jobs
    from jobs import runner
    from app.models.jobs import JobRun
    from app.platform import clock
    assert ("jobs.service.sweep", "* * * * *") in jobs.periodic_jobs()
    other = ("tests.jobs.test_jobs.tick_fake", "* * * * *")
    periodic = [("jobs.service.sweep", "* * * * *"), other] if sweep_first else [other, ("jobs.service.sweep", "* * * * *")]
    base = (dt.datetime.now(dt.timezone.utc).replace(second=0, microsecond=0)
            + dt.timedelta(minutes=10 + uuid.uuid4().int % 10 ** 5))
    now = [base + dt.timedelta(seconds=1)]

    def advance(seconds):
        now[0] += dt.timedelta(seconds=seconds)
        clock.set_now(now[0].replace(tzinfo=None))

    minutes = 6

    class SimulatedStop:  # the ticker loop's wait until the next minute, in simulated time
        waits = 0

        def is_set(self):
            return self.waits >= minutes

        def wait(self, seconds):
            self.waits += 1
            advance(seconds)

        def set(self):
            self.waits = minutes

    clock.set_now(now[0].replace(tzinfo=None))
    monkeypatch.setattr(time, "sleep", advance)
    try:
        ticker = runner.Ticker(app, periodic=periodic, clock=lambda: now[0], grace=2)
        ticker._stop = SimulatedStop()
        ticker._loop()
    finally:
        clock.set_now(None)
    for m in range(minutes):
        key = runner.tick_key(base + dt.timedelta(minutes=m))
        for path, _ in periodic:
            row = JobRun.get_or_none((JobRun.job == path) & (JobRun.run_key == key))
            assert row is not None and row.status == "succeeded", (path, key, row and row.status)
