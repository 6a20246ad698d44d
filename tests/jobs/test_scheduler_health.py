"""A failing periodic-job scheduler is never silent: logged, counted in /metrics, and /readyz says degraded."""
import logging
import threading
import time
import uuid

from app.metrics import SCHEDULER_ERRORS
from app.platform import scheduler as health
from jobs import runner


def _errors(loop):
    return SCHEDULER_ERRORS.labels(loop)._value.get()


def _wait(predicate, seconds=10):
    deadline = time.monotonic() + seconds
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.05)
    return predicate()


def test_cron_loop_failure_is_logged_counted_and_degrades_readyz(app, client, jobs_queue, redis_url, caplog):
    import jobs
    conn = jobs.redis_connection(redis_url)
    scheduler = runner.build_cron_scheduler(conn, "UTC", [("jobs.platform.prune_job_runs", "0 3 * * *")],
                                            jobs_queue)
    failing = threading.Event()
    failing.set()
    real = scheduler.enqueue_jobs

    def enqueue_jobs():
        if failing.is_set():
            raise ConnectionError("redis went away " + uuid.uuid4().hex[:6])
        return real()

    scheduler.enqueue_jobs = enqueue_jobs
    scheduler.calculate_sleep_interval = lambda: 0  # iterate every 0.5 s
    before = _errors("cron")
    stop = threading.Event()
    caplog.set_level(logging.ERROR, logger="jobs.runner")
    thread = threading.Thread(target=runner._cron_loop, args=(scheduler, stop, jobs_queue), daemon=True)
    thread.start()
    try:
        assert _wait(lambda: health.health(conn, jobs_queue) is not None)
        assert _errors("cron") >= before + 1
        assert "cron scheduler iteration failed" in caplog.text
        r = client.get("/readyz")
        assert r.status_code == 200
        assert r.json["status"] == "degraded"
        assert r.json["checks"]["scheduler"].startswith("degraded: ConnectionError: redis went away")
        assert "patron_scheduler_errors_total" in client.get("/metrics").get_data(as_text=True)
        failing.clear()  # recovered: the next good iteration clears the degraded state
        assert _wait(lambda: health.health(conn, jobs_queue) is None)
        assert client.get("/readyz").json["status"] == "ready"
    finally:
        stop.set()
        thread.join(10)
        conn.delete(health.HEALTH_KEY.format(queue=jobs_queue))
    assert not thread.is_alive()


def test_ticker_failure_degrades_readyz_without_redis(app, client, monkeypatch):
    monkeypatch.setattr(health, "_local", {})
    ticker = runner.Ticker(app, periodic=[])
    calls = []

    def run_due(now=None):
        calls.append(now)
        if len(calls) == 1:
            raise RuntimeError("clock exploded")
        return []

    monkeypatch.setattr(ticker, "run_due", run_due)
    before = _errors("ticker")
    monkeypatch.setattr(ticker._stop, "wait", lambda seconds: ticker._stop.set())  # one iteration per _loop()
    ticker._loop()
    assert _errors("ticker") == before + 1
    r = client.get("/readyz")
    assert (r.status_code, r.json["status"]) == (200, "degraded")
    assert r.json["checks"]["scheduler"] == "degraded: RuntimeError: clock exploded"
    ticker._stop.clear()
    ticker._loop()  # a good iteration
    assert client.get("/readyz").json["status"] == "ready"
