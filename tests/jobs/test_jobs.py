"""Jobs: inline runs, RQ on real Redis with a real worker process, unique ids, retries, ticker, cron."""
import datetime as dt
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

import jobs
from app.models.core import AuditLog
from app.models.jobs import JobRun
from jobs import runner
from tests.conftest import FakeTerminal

ROOT = Path(__file__).resolve().parents[2]


# --- job functions used by these tests (the worker process imports this module) ----------------

def record(marker):
    """Write one audit row: proof that the job ran, and how often."""
    AuditLog.create(actor="job", action="test-job", subject=marker)
    return marker


def boom(marker):
    AuditLog.create(actor="job", action="test-boom", subject=marker)
    raise RuntimeError("boom " + marker)


@jobs.job(retries=2, intervals=[0])
def flaky(marker):
    """Fails on its first attempt, succeeds on the second (declared safe to retry)."""
    AuditLog.create(actor="job", action="test-flaky", subject=marker)
    if AuditLog.select().where((AuditLog.action == "test-flaky") & (AuditLog.subject == marker)).count() < 2:
        raise RuntimeError("transient")
    return "ok"


def steps(n):
    """Reports its progress one step at a time (what a long job does)."""
    for i in range(1, n + 1):
        jobs.progress(i, n)
    return n


def tick_fake():
    AuditLog.create(actor="job", action="tick-fake")


def tick_thread():
    AuditLog.create(actor="job", action="tick-thread")


def tick_cron():
    AuditLog.create(actor="job", action="tick-cron")


def runs_of(action, marker=None):
    q = AuditLog.select().where(AuditLog.action == action)
    if marker is not None:
        q = q.where(AuditLog.subject == marker)
    return q.count()


def job_run(path, key):
    return JobRun.get_or_none((JobRun.job == path) & (JobRun.run_key == key))


def run_worker_burst(database_url, redis_url, queue_name):
    """A real `patron worker --burst` process: drains the queue and exits."""
    env = dict(os.environ, PATRON_DATABASE_URL=database_url, PATRON_REDIS_URL=redis_url,
               PATRON_JOBS_QUEUE=queue_name, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "tests.jobs.worker", "worker", "--burst"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stderr




# --- inline (no Redis) ------------------------------------------------------------------------

def test_inline_job_runs_once_per_job_id(app, db_conn):
    marker = uuid.uuid4().hex
    job_id = jobs.job_id_for("tests.jobs.test_jobs.record", marker)
    first = jobs.enqueue("tests.jobs.test_jobs.record", marker, job_id=job_id)
    second = jobs.enqueue("tests.jobs.test_jobs.record", marker, job_id=job_id)
    assert (first.status, first.result) == ("succeeded", marker)
    assert second.status == "duplicate"
    assert runs_of("test-job", marker) == 1
    row = job_run("tests.jobs.test_jobs.record", job_id)
    assert (row.status, row.runner, row.attempts) == ("succeeded", "inline", 1)


def test_inline_without_job_id_runs_every_time(app, db_conn):
    marker = uuid.uuid4().hex
    jobs.enqueue("tests.jobs.test_jobs.record", marker)
    jobs.enqueue("tests.jobs.test_jobs.record", marker)
    assert runs_of("test-job", marker) == 2


def test_inline_failure_is_recorded_not_raised_and_not_retried(app, db_conn):
    marker = uuid.uuid4().hex
    ref = jobs.enqueue("tests.jobs.test_jobs.boom", marker, job_id="boom-" + marker)
    assert ref.status == "failed" and "boom" in ref.error
    assert runs_of("test-boom", marker) == 1  # undeclared job: no retry
    row = job_run("tests.jobs.test_jobs.boom", "boom-" + marker)
    assert row.status == "failed" and "RuntimeError: boom" in row.error


def test_inline_retry_when_declared(app, db_conn):
    marker = uuid.uuid4().hex
    ref = jobs.enqueue("tests.jobs.test_jobs.flaky", marker, job_id="flaky-" + marker)
    assert ref.status == "succeeded"
    assert runs_of("test-flaky", marker) == 2
    assert job_run("tests.jobs.test_jobs.flaky", "flaky-" + marker).attempts == 2


@pytest.mark.parametrize("job_id", ["a.b", "has space", "x" * 201, "", "tick:1"])
def test_job_ids_rq_cannot_store_are_refused(app, db_conn, job_id):
    with pytest.raises(ValueError, match="job id"):
        jobs.enqueue("tests.jobs.test_jobs.record", "m", job_id=job_id)


@pytest.mark.parametrize("path", ["os.system", "jobs.nope.nothing", "jobs.platform.missing", "jobs..x", 42])
def test_only_job_functions_can_be_enqueued(app, db_conn, path):
    with pytest.raises(ValueError):
        jobs.enqueue(path)


def test_job_id_for_is_deterministic_and_rq_safe():
    a = jobs.job_id_for("jobs.ledger.reconcile", "order:2026/11 #7")
    assert a == jobs.job_id_for("jobs.ledger.reconcile", "order:2026/11 #7")
    assert jobs.JOB_ID_RE.fullmatch(a)
    assert jobs.job_id_for("jobs.x.y", "a:1") != jobs.job_id_for("jobs.x.y", "a_1")
    assert jobs.job_id_for("jobs.x.y", "plain-key_1") == "jobs_x_y-plain-key_1"  # readable when already safe
    long = jobs.job_id_for("jobs.x.y", "k" * 500)
    assert jobs.JOB_ID_RE.fullmatch(long) and long != jobs.job_id_for("jobs.x.y", "k" * 499)


# --- RQ on real Redis, real worker process --------------------------------------------------------

def test_rq_worker_runs_job_that_writes_to_database(app, db_conn, jobs_queue, redis_url, database_url):
    marker = uuid.uuid4().hex
    job_id = "rec-" + marker
    assert jobs.enqueue("tests.jobs.test_jobs.record", marker, job_id=job_id).status == "queued"
    assert jobs.enqueue("tests.jobs.test_jobs.record", marker, job_id=job_id).status == "duplicate"
    assert runs_of("test-job", marker) == 0  # queued, not run inline
    job = jobs.queue(jobs.redis_connection()).fetch_job(job_id)
    assert job.func_name == jobs.RUNNER and job.args[:3] == ["tests.jobs.test_jobs.record", job_id, [marker]]

    run_worker_burst(database_url, redis_url, jobs_queue)
    assert runs_of("test-job", marker) == 1
    row = job_run("tests.jobs.test_jobs.record", job_id)
    assert (row.status, row.runner) == ("succeeded", "rq")
    job.refresh()
    assert job.get_status() == "finished" and job.return_value()["result"] == marker

    # enqueued again after it ran: still once (RQ keeps the id; job_run backs it up beyond that)
    assert jobs.enqueue("tests.jobs.test_jobs.record", marker, job_id=job_id).status == "duplicate"
    assert runner.execute("tests.jobs.test_jobs.record", job_id, [marker])["status"] == "duplicate"
    assert runs_of("test-job", marker) == 1


def test_rq_retries_only_declared_jobs(app, db_conn, jobs_queue, redis_url, database_url):
    marker = uuid.uuid4().hex
    jobs.enqueue("tests.jobs.test_jobs.boom", marker, job_id="boom-" + marker)
    jobs.enqueue("tests.jobs.test_jobs.flaky", marker, job_id="flaky-" + marker)
    run_worker_burst(database_url, redis_url, jobs_queue)
    assert runs_of("test-boom", marker) == 1
    assert job_run("tests.jobs.test_jobs.boom", "boom-" + marker).status == "failed"
    q = jobs.queue(jobs.redis_connection())
    assert q.fetch_job("boom-" + marker).get_status() == "failed"
    # enqueueing a failed unique job again runs it again (a manual retry), once
    assert jobs.enqueue("tests.jobs.test_jobs.boom", marker, job_id="boom-" + marker).status == "requeued"
    run_worker_burst(database_url, redis_url, jobs_queue)
    assert runs_of("test-boom", marker) == 2
    assert job_run("tests.jobs.test_jobs.boom", "boom-" + marker).attempts == 2
    assert runs_of("test-flaky", marker) == 2
    row = job_run("tests.jobs.test_jobs.flaky", "flaky-" + marker)
    assert (row.status, row.attempts) == ("succeeded", 2)


# --- periodic: ticker (no Redis) and RQ cron ----------------------------------------------------

def test_ticker_runs_each_tick_once(app, db_conn):
    periodic = [("tests.jobs.test_jobs.tick_fake", "*/5 * * * *")]
    # a unique far-off minute so reruns of the suite on one database never collide
    base = dt.datetime(2031, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(
        minutes=5 * (uuid.uuid4().int % 10**6))
    before = runs_of("tick-fake")
    ticker = runner.Ticker(app, periodic=periodic, clock=lambda: base - dt.timedelta(seconds=30))
    assert ticker.run_due(base + dt.timedelta(seconds=1)) == [("tests.jobs.test_jobs.tick_fake", "succeeded")]
    assert ticker.run_due(base + dt.timedelta(minutes=3)) == []  # no tick between
    assert ticker.run_due(base + dt.timedelta(minutes=5, seconds=2)) == [
        ("tests.jobs.test_jobs.tick_fake", "succeeded")]
    # another process's ticker on the same tick: claimed already
    other = runner.Ticker(app, periodic=periodic, clock=lambda: base)
    assert other.run_due(base + dt.timedelta(minutes=5, seconds=3)) == [
        ("tests.jobs.test_jobs.tick_fake", "duplicate")]
    assert runs_of("tick-fake") == before + 2
    row = job_run("tests.jobs.test_jobs.tick_fake", runner.tick_key(base + dt.timedelta(minutes=5)))
    assert row.runner == "ticker" and row.scheduled_for == (base + dt.timedelta(minutes=5)).replace(tzinfo=None)


def test_ticker_after_downtime_runs_only_latest_tick(app, db_conn):
    periodic = [("tests.jobs.test_jobs.tick_fake", "* * * * *")]
    base = dt.datetime(2032, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(
        minutes=100 * (uuid.uuid4().int % 10**6))
    ticker = runner.Ticker(app, periodic=periodic, clock=lambda: base)
    before = runs_of("tick-fake")
    ticker.run_due(base + dt.timedelta(minutes=30, seconds=5))
    assert runs_of("tick-fake") == before + 1


def test_ticker_cron_is_read_in_business_time_zone(app):
    tz = jobs._tz("Asia/Shanghai")
    now = dt.datetime(2026, 12, 31, 16, 0, 30, tzinfo=dt.timezone.utc)  # 2027-01-01 00:00:30 in Shanghai
    assert runner.latest_tick("0 0 1 1 *", now, tz) == dt.datetime(2026, 12, 31, 16, 0, tzinfo=dt.timezone.utc)
    assert runner.next_tick("0 0 * * *", now, tz) == dt.datetime(2027, 1, 1, 16, 0, tzinfo=dt.timezone.utc)


def test_ticker_thread_runs_periodic_job(app, db_conn):
    import time
    before = runs_of("tick-thread")
    ticker = runner.Ticker(app, periodic=[("tests.jobs.test_jobs.tick_thread", "* * * * *")]).start()
    try:
        deadline = time.monotonic() + 10
        while runs_of("tick-thread") == before and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        ticker.stop()
    assert runs_of("tick-thread") >= before + 1
    assert ticker.thread.name == "patron-ticker"


def test_every_declared_periodic_job_is_valid_and_registered_with_rq_cron(app, redis_url):
    import importlib
    import pkgutil

    declared = []
    for mod in pkgutil.iter_modules(jobs.__path__):
        declared += [p for p, _ in getattr(importlib.import_module(f"jobs.{mod.name}"), "PERIODIC", [])]
    assert "jobs.platform.prune_job_runs" in declared
    periodic = jobs.periodic_jobs()  # raises on a bad path or cron expression
    assert sorted(p for p, _ in periodic) == sorted(declared)

    scheduler = runner.build_cron_scheduler(jobs.redis_connection(redis_url), "Asia/Shanghai")
    cron_jobs = scheduler.get_jobs()
    assert sorted(j.name for j in cron_jobs) == sorted(declared)
    assert {j.name: j.cron for j in cron_jobs} == dict(periodic)
    assert all(j.next_enqueue_time > dt.datetime.now(dt.timezone.utc) for j in cron_jobs)


def test_rq_cron_enqueues_each_tick_once_across_schedulers(app, db_conn, redis_url, database_url):
    conn = jobs.redis_connection(redis_url)
    periodic = [("tests.jobs.test_jobs.tick_cron", "* * * * *")]
    before = runs_of("tick-cron")
    queue_name = f"test-{uuid.uuid4().hex[:12]}"
    schedulers = [runner.build_cron_scheduler(conn, "UTC", periodic, queue_name) for _ in range(2)]
    for s in schedulers:  # both workers' schedulers find the same tick due
        job = s.get_jobs()[0]
        job.next_enqueue_time = runner.latest_tick(job.cron, runner.utcnow(), job.tz)
        assert s.enqueue_jobs() == [job]
    tick = schedulers[0].get_jobs()[0].latest_enqueue_time
    assert tick is not None
    assert jobs.queue(conn, queue_name).count == 1  # the second scheduler's copy was refused
    run_worker_burst(database_url, redis_url, queue_name)
    assert runs_of("tick-cron") == before + 1
    runs = list(JobRun.select().where((JobRun.job == "tests.jobs.test_jobs.tick_cron") & (JobRun.runner == "cron")))
    assert runs and all(r.status == "succeeded" for r in runs)


def test_worker_without_redis_is_a_clear_error(monkeypatch, capsys, database_url):
    from app.cli import main
    monkeypatch.delenv("PATRON_REDIS_URL", raising=False)
    assert main(["--database-url", database_url, "worker", "--burst"]) == 2
    assert "PATRON_REDIS_URL" in capsys.readouterr().err


def test_jobs_list_shows_periodic_jobs(capsys, database_url):
    from app.cli import main
    assert main(["--database-url", database_url, "jobs", "list"]) == 0
    assert "jobs.platform.prune_job_runs" in capsys.readouterr().out


def test_job_arguments_must_be_json_values_in_both_modes(app, db_conn):
    import datetime
    with pytest.raises(ValueError, match="JSON values"):
        jobs.enqueue("tests.jobs.test_jobs.record", datetime.date(2026, 1, 1))
    with pytest.raises(ValueError, match="JSON values"):
        jobs.enqueue("tests.jobs.test_jobs.record", float("nan"))
    marker = uuid.uuid4().hex
    # a tuple arrives as a list, exactly as it would through RQ's JSON serializer
    assert jobs.enqueue("tests.jobs.test_jobs.echo", (1, marker), key={"a": (2,)}).result == [[1, marker], {"a": [2]}]


def echo(value, key=None):
    return [value, key]


def test_cron_loop_thread_enqueues_due_ticks_and_stops(app, redis_url):
    import threading
    import time
    conn = jobs.redis_connection(redis_url)
    queue_name = f"test-{uuid.uuid4().hex[:12]}"
    scheduler = runner.build_cron_scheduler(conn, "Asia/Shanghai", [("tests.jobs.test_jobs.tick_cron", "* * * * *")],
                                            queue_name)
    job = scheduler.get_jobs()[0]
    job.next_enqueue_time = runner.utcnow() - dt.timedelta(seconds=1)  # due now
    stop = threading.Event()
    thread = threading.Thread(target=runner._cron_loop, args=(scheduler, stop), daemon=True)
    thread.start()
    try:
        q = jobs.queue(conn, queue_name)
        deadline = time.monotonic() + 10
        # RQ enqueues the tick before it records it (set_enqueue_time): wait for both, then look
        while (q.count == 0 or job.latest_enqueue_time is None) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert q.count == 1
        queued = q.jobs[0]
        assert queued.func_name == jobs.RUNNER and queued.args[0] == "tests.jobs.test_jobs.tick_cron"
        assert queued.id.startswith(f"{queue_name}_tests_jobs_test_jobs_tick_cron-tick-")
        assert job.next_enqueue_time > runner.utcnow()  # rescheduled to the next minute
        from rq.cron import CronScheduler
        assert scheduler.name in [s.name for s in CronScheduler.all(conn)]  # visible to RQ's tools
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
    q.empty()


# --- progress of a job run by hand ----------------------------------------------------------------

def test_jobs_run_draws_the_job_progress_on_a_terminal_only(app, monkeypatch, capsys, database_url):
    from app.cli import main
    monkeypatch.delenv("PATRON_REDIS_URL", raising=False)
    argv = ["--database-url", database_url, "jobs", "run", "tests.jobs.test_jobs.steps", "3"]
    assert main(argv) == 0  # captured: not a terminal, no bar
    out, err = capsys.readouterr()
    assert '"status": "succeeded"' in out and '"result": 3' in out and "3/3" not in err
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(argv) == 0
    drawn = terminal.getvalue()
    assert "tests.jobs.test_jobs.steps" in drawn and "1/3" in drawn and "3/3" in drawn, drawn
    assert "3/3" not in capsys.readouterr().out  # the bar never goes to stdout


def test_jobs_run_wait_follows_a_worker_and_draws_its_progress(app, monkeypatch, capsys, database_url, redis_url):
    import threading
    import time

    from app.cli import main
    queue_name = f"test-{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("PATRON_REDIS_URL", redis_url)
    monkeypatch.setenv("PATRON_JOBS_QUEUE", queue_name)
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    result = {}
    waiter = threading.Thread(target=lambda: result.setdefault("rc", main(
        ["--database-url", database_url, "jobs", "run", "tests.jobs.test_jobs.steps", "4", "--wait",
         "--wait-timeout", "120"])))
    waiter.start()
    conn = jobs.redis_connection(redis_url)
    deadline = time.monotonic() + 60
    while jobs.queue(conn, queue_name).count == 0:  # enqueued, and waited for
        assert time.monotonic() < deadline and waiter.is_alive(), "the job was never enqueued"
        time.sleep(0.05)
    assert waiter.is_alive()  # --wait: still waiting for a worker
    run_worker_burst(database_url, redis_url, queue_name)
    waiter.join(120)
    assert not waiter.is_alive() and result["rc"] == 0
    out = capsys.readouterr().out
    assert '"status": "succeeded"' in out and '"result": 4' in out, out
    assert "4/4" in terminal.getvalue(), terminal.getvalue()
