"""Running jobs: the recorded executor, the in-process ticker, RQ's cron scheduler and the RQ worker."""
import datetime as dt
import json
import logging
import threading
import time
import uuid

from croniter import croniter

import jobs
from app import create_app
from app.db import connection
from app.metrics import JOBS
from app.platform import scheduler as health
from app.models.jobs import JobRun
from app.platform import clock, timefmt
from jobs import QUEUE, RUNNER, JobRef, _tz, job_id_for, options, periodic_jobs, queue, resolve

log = logging.getLogger(__name__)

_app_lock = threading.Lock()


def utcnow():
    """The product's clock (app.platform.clock) as an aware UTC instant, as croniter and RQ's scheduler want."""
    return clock.now().replace(tzinfo=dt.timezone.utc)


def _naive_utc(value):
    return value.astimezone(dt.timezone.utc).replace(tzinfo=None)


def _ensure_app():
    from flask import current_app, has_app_context
    if has_app_context():
        return current_app._get_current_object()
    with _app_lock:
        if jobs.process_app is None:
            jobs.process_app = create_app()
        return jobs.process_app


# --- exactly-once record ---------------------------------------------------------------------

def _claim(path, run_key, scheduled_for, runner, stale_after):
    """Own the run (path, run_key), or None if it succeeded already or is running elsewhere.

    A compare-and-set on ``token`` instead of SELECT ... FOR UPDATE, so it works the same on both
    engines and never aborts a surrounding PostgreSQL transaction.
    """
    token = uuid.uuid4().hex
    JobRun.insert(job=path, run_key=run_key, scheduled_for=scheduled_for, runner=runner,
                  status="running", token=token).on_conflict_ignore().execute()
    row = JobRun.get((JobRun.job == path) & (JobRun.run_key == run_key))
    if row.token == token:
        return token
    if row.status == "succeeded":
        return None
    if row.status == "running" and row.started_at > _naive_utc(utcnow()) - dt.timedelta(seconds=stale_after):
        return None
    n = (JobRun.update(status="running", token=token, attempts=JobRun.attempts + 1, runner=runner,
                       started_at=_naive_utc(utcnow()), finished_at=None, error=None)
         .where((JobRun.id == row.id) & (JobRun.token == row.token)).execute())
    return token if n else None


def _finish(path, run_key, token, status, error=None):
    (JobRun.update(status=status, finished_at=_naive_utc(utcnow()), error=error)
     .where((JobRun.job == path) & (JobRun.run_key == run_key) & (JobRun.token == token)).execute())


def _jsonable(value):
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return json.loads(json.dumps(value, default=str))


def _rq_progress():
    """``progress(done, total)`` kept in the current RQ job's meta (at most once a second, and the last step),
    for ``patron jobs run --wait``; None outside an RQ job. A Redis hiccup here never fails the job."""
    from rq import get_current_job
    current = get_current_job()
    if current is None:
        return None
    last = [0.0]

    def report(done, total):
        now = time.monotonic()
        if now - last[0] < 1.0 and done < total:
            return
        last[0] = now
        current.meta["progress"] = [int(done), int(total)]
        try:
            current.save_meta()
        except Exception as exc:  # noqa: BLE001 - progress is best effort; the job goes on
            log.warning("job %s: progress not saved: %s", current.id, exc)
    return report


def execute(path, run_key, args=None, kwargs=None, scheduled_for=None, runner="rq"):
    """Run one job, recorded in ``job_run`` so a run key never succeeds twice.

    This is what RQ workers, the cron scheduler and the ticker actually call; the job function
    itself only sees its own arguments.

    Args:
        path: dotted job path.
        run_key: the job id or periodic tick key; unique per job.
        args: positional arguments (JSON values).
        kwargs: keyword arguments (JSON values).
        scheduled_for: ISO time of the periodic tick, if any.
        runner: who runs it (rq, cron, ticker, inline), for the record.

    Returns:
        {"status": "succeeded", "result": ...} or {"status": "duplicate"}.

    Raises:
        Exception: whatever the job raised (after recording the failure), so RQ can retry it.
    """
    fn = resolve(path)
    app = _ensure_app()
    when = timefmt.parse(scheduled_for, "/scheduled_for") if scheduled_for else None
    with app.app_context(), connection():
        token = _claim(path, run_key, when, runner, options(fn)["timeout"] + 60)
        if token is None:
            JOBS.labels(path, "duplicate").inc()
            log.info("job %s %s already done or running; skipped", path, run_key)
            return {"status": "duplicate"}
        started = time.perf_counter()
        report = _rq_progress() if runner == "rq" and jobs._PROGRESS.get() is None else None
        try:
            if report is None:
                result = fn(*(args or []), **(kwargs or {}))
            else:
                with jobs.reporting(report):
                    result = fn(*(args or []), **(kwargs or {}))
        except Exception as exc:
            _finish(path, run_key, token, "failed", f"{type(exc).__name__}: {exc}"[:2000])
            JOBS.labels(path, "failed").inc()
            raise
        _finish(path, run_key, token, "succeeded")
        JOBS.labels(path, "succeeded").inc()
        log.info("job %s %s succeeded in %.1f ms", path, run_key, (time.perf_counter() - started) * 1000)
        return {"status": "succeeded", "result": _jsonable(result)}


def execute_inline(path, run_key, args, kwargs, opts):
    """Run a job now in this thread (no Redis); failures are logged and recorded, not raised."""
    attempts = 1 + opts["retries"]
    error = None
    for attempt in range(1, attempts + 1):
        try:
            out = execute(path, run_key, args, kwargs, None, "inline")
        except Exception as exc:  # a job failure must not break the caller that enqueued it
            error = f"{type(exc).__name__}: {exc}"
            log.exception("inline job %s %s failed (attempt %d/%d)", path, run_key, attempt, attempts)
            continue
        if out["status"] == "duplicate":
            return JobRef(run_key, path, "duplicate")
        return JobRef(run_key, path, "succeeded", result=out["result"])
    return JobRef(run_key, path, "failed", error=error)


# --- periodic ticks ----------------------------------------------------------------------------

def tick_key(tick):
    """The run key of a periodic tick: ``tick-YYYYmmddHHMM`` in UTC."""
    return "tick-" + tick.astimezone(dt.timezone.utc).strftime("%Y%m%d%H%M")


def latest_tick(expr, now, tz):
    """The latest time <= now (UTC, aware) matching the cron expression read in time zone ``tz``."""
    local = now.astimezone(tz) + dt.timedelta(microseconds=1)
    return croniter(expr, local).get_prev(dt.datetime).astimezone(dt.timezone.utc)


def next_tick(expr, after, tz):
    """The first time > after (UTC, aware) matching the cron expression read in time zone ``tz``."""
    return croniter(expr, after.astimezone(tz)).get_next(dt.datetime).astimezone(dt.timezone.utc)


class Ticker:
    """Runs PERIODIC jobs inline at minute resolution (``patron serve`` without Redis).

    Each tick is claimed in ``job_run`` first, so several processes with tickers never run one
    tick twice. Missed ticks are not replayed one by one: after a pause only the latest runs.
    """

    def __init__(self, app, periodic=None, clock=utcnow, grace=60):
        self.app = app
        self.periodic = periodic_jobs() if periodic is None else list(periodic)
        self.clock = clock
        self.tz = _tz(app.config.get("TIMEZONE") or "UTC")
        # a restart within the minute still runs that minute's tick (job_run dedupes it)
        self.last = clock() - dt.timedelta(seconds=grace)
        self._stop = threading.Event()
        self.thread = None

    def due(self, now):
        return [(path, tick) for path, expr in self.periodic
                if (tick := latest_tick(expr, now, self.tz)) > self.last]

    def run_due(self, now=None):
        """Run every job whose latest tick falls after the previous call; returns [(path, status)]."""
        now = now or self.clock()
        ran = []
        for path, tick in self.due(now):
            try:
                with self.app.app_context():  # this app, not a new one: the ticker runs in its own thread
                    out = execute(path, tick_key(tick), [], {}, tick.isoformat(), "ticker")
                ran.append((path, out["status"]))
            except Exception:
                log.exception("periodic job %s for %s failed", path, tick.isoformat())
                ran.append((path, "failed"))
        self.last = now
        return ran

    def _loop(self):
        log.info("ticker started with %d periodic job(s)", len(self.periodic))
        while not self._stop.is_set():
            try:
                self.run_due()
                health.ok()
            except Exception as exc:  # never let the ticker thread die, never fail silently
                log.exception("ticker iteration failed")
                health.failed("ticker", exc)
            now = self.clock()
            self._stop.wait(60.5 - now.second - now.microsecond / 1e6)

    def start(self):
        self.thread = threading.Thread(target=self._loop, name="patron-ticker", daemon=True)
        self.thread.start()
        return self

    def stop(self):
        self._stop.set()
        if self.thread:
            self.thread.join(5)


_ticker = None


def start_ticker(app):
    """Start this process's one ticker thread (idempotent); returns it."""
    global _ticker
    if _ticker is None:
        _ticker = Ticker(app).start()
    return _ticker


# --- RQ: cron scheduler and worker -------------------------------------------------------------

def _cron_classes():
    from rq.cron import CronJob, CronScheduler
    from rq.exceptions import DuplicateJobError

    class PeriodicCronJob(CronJob):
        """A PERIODIC entry on RQ's cron: business time zone, JSON serializer, one job id per tick."""

        def __init__(self, path, expr, tz, queue_name):
            self.path, self.tz = path, tz
            super().__init__(queue_name=queue_name, func_name=RUNNER, cron=expr, name=path,
                             job_timeout=options(resolve(path))["timeout"])

        def get_next_enqueue_time(self):
            return next_tick(self.cron, self.latest_enqueue_time or utcnow(), self.tz)

        def enqueue(self, connection):
            # after downtime, run the latest due tick rather than the stale first one
            tick = max(self.next_enqueue_time, latest_tick(self.cron, utcnow(), self.tz))
            key = tick_key(tick)
            try:
                return queue(connection, self.queue_name).enqueue_call(
                    RUNNER, args=[self.path, key, [], {}, tick.isoformat(), "cron"],
                    # the queue is part of the id: deployments sharing one Redis never collide
                    job_id=job_id_for(f"{self.queue_name}.{self.path}", key), unique=True,
                    description=f"{self.path} @ {key}",
                    timeout=self.job_options.get("job_timeout"), result_ttl=86400, failure_ttl=7 * 86400)
            except DuplicateJobError:  # another worker's scheduler enqueued this tick first
                log.info("periodic %s %s already enqueued", self.path, key)
                return None

    class PeriodicCronScheduler(CronScheduler):
        def add_periodic(self, path, expr, tz, queue_name):
            job = PeriodicCronJob(path, expr, tz, queue_name)
            self._cron_jobs.append(job)
            self.log.info("registered periodic %s %r", path, expr)
            return job

    return PeriodicCronScheduler


def build_cron_scheduler(connection, tz_name, periodic=None, queue_name=None):
    """RQ's CronScheduler with one cron job per PERIODIC entry of jobs.MODULES."""
    scheduler = _cron_classes()(connection=connection)
    for path, expr in (periodic_jobs() if periodic is None else periodic):
        scheduler.add_periodic(path, expr, _tz(tz_name), queue_name or jobs.queue_name())
    return scheduler


def _failed(loop, exc, conn, queue_name):
    try:
        health.failed(loop, exc, conn, queue_name)
    except Exception:  # Redis itself is down: /readyz reports that on its own
        log.exception("could not record the %s failure in Redis", loop)


def _cron_loop(scheduler, stop, queue_name=None):
    # CronScheduler.start() installs signal handlers, which only the main thread may do; the
    # worker owns the main thread, so this is start()'s loop with a stop event.
    queue_name = queue_name or jobs.queue_name()
    try:
        scheduler.register_birth()
    except Exception as exc:  # noqa: BLE001 - counted and shown by /readyz, then retried by the loop
        log.exception("cron scheduler could not register its birth")
        _failed("cron", exc, scheduler.connection, queue_name)
    try:
        while not stop.is_set():
            try:
                if scheduler.enqueue_jobs():
                    scheduler.save()
                scheduler.heartbeat()
                health.ok(scheduler.connection, queue_name)
            except Exception as exc:  # noqa: BLE001 - the loop must survive; the failure is never silent
                log.exception("cron scheduler iteration failed")
                _failed("cron", exc, scheduler.connection, queue_name)
            stop.wait(min(max(scheduler.calculate_sleep_interval(), 0.5), 30))
    finally:
        try:
            scheduler.register_death()
        except Exception as exc:  # noqa: BLE001
            log.exception("cron scheduler could not register its death")
            _failed("cron", exc, scheduler.connection, queue_name)


def run_worker(app, queues=None, burst=False, cron=True, name=None):
    """Run an RQ worker (in this process, no fork per job) plus RQ's cron scheduler in a thread.

    SimpleWorker keeps the policy engine and the database pool loaded once per process instead
    of forking a work horse per job from a process that also runs the cron thread.

    Returns:
        True if any job was processed.
    """
    from rq import SimpleWorker
    from rq.serializers import JSONSerializer

    jobs.process_app = app
    queues = queues or [app.config.get("JOBS_QUEUE") or QUEUE]
    conn = jobs.redis_connection(app.config["REDIS_URL"])
    conn.ping()
    worker = SimpleWorker([queue(conn, q) for q in queues], connection=conn, serializer=JSONSerializer,
                          name=name)
    stop = threading.Event()
    thread = None
    if cron and not burst:
        # periodic jobs go to the first queue this worker serves
        scheduler = build_cron_scheduler(conn, app.config.get("TIMEZONE") or "UTC", queue_name=queues[0])
        thread = threading.Thread(target=_cron_loop, args=(scheduler, stop, queues[0]), name="patron-cron",
                                  daemon=True)
        thread.start()
    try:
        return worker.work(burst=burst, with_scheduler=True, logging_level=app.config.get("LOG_LEVEL", "INFO"))
    finally:
        stop.set()
        if thread:
            thread.join(5)
