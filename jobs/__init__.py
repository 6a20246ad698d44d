"""Jobs: one way to enqueue (RQ on Redis when configured, inline otherwise) and one place periodic jobs are declared."""
import contextlib
import contextvars
import functools
import importlib
import json
import logging
import os
import re
import uuid
from dataclasses import dataclass, field

from app.platform import redis as platform_redis

log = logging.getLogger(__name__)

QUEUE = "default"
# RQ >= 2.8 accepts only these characters in job ids; we check before Redis ever sees one.
JOB_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,200}")
RUNNER = "jobs.runner.execute"
# Every module of job functions, listed (one per context); their PERIODIC lists are the cron table.
MODULES = ("ledger", "membership", "outbox", "platform", "simulation", "tickets", "service")
# Other modules whose functions may run as jobs; empty in the product. A test suite lists its own
# job module here (monkeypatch, or its worker launcher) so workers accept paths into it.
EXTRA_MODULES = ()

# Where a running job's progress goes: the CLI's bar (inline), the RQ job's meta (a worker), or nowhere.
_PROGRESS = contextvars.ContextVar("job_progress", default=None)


def progress(done, total):
    """A running job says how far it is (``done`` of ``total`` items): long jobs pass this as their services'
    ``progress`` callback. ``patron jobs run`` draws it on a terminal; on a worker it is kept in the RQ job's
    meta (``progress: [done, total]``), which ``patron jobs run --wait`` reads."""
    report = _PROGRESS.get()
    if report is not None:
        report(done, total)


@contextlib.contextmanager
def reporting(callback):
    """Send the progress of jobs run in this context (inline) to ``callback(done, total)``."""
    token = _PROGRESS.set(callback)
    try:
        yield
    finally:
        _PROGRESS.reset(token)


# The Flask app of a worker process (set by runner.run_worker, or created on first use by a plain `rq worker`).
process_app = None


def job(retries=0, intervals=(1, 5, 30), timeout=600):
    """Declare a job function's execution options.

    Retries are off unless declared: only a job proven idempotent (deterministic key in the
    database, side effects after commit) may say ``@job(retries=3)``.

    Args:
        retries: how many times RQ (or the inline runner) retries a failed run.
        intervals: seconds between RQ retries.
        timeout: RQ job timeout in seconds.
    """
    def deco(fn):
        fn.job_options = {"retries": int(retries), "intervals": list(intervals), "timeout": int(timeout)}
        return fn
    return deco


def options(fn):
    """A job function's declared options (defaults: no retries, 600 s timeout)."""
    return getattr(fn, "job_options", {"retries": 0, "intervals": [], "timeout": 600})


def resolve(path):
    """The function named by a dotted path under ``jobs.`` (e.g. ``jobs.ledger.reconcile``) or in EXTRA_MODULES."""
    if not isinstance(path, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+", path):
        raise ValueError(f"not a job path: {path!r} (expected jobs.<module>.<function>)")
    module, _, name = path.rpartition(".")
    if not (module.startswith("jobs.") or module in EXTRA_MODULES):
        raise ValueError(f"not a job path: {path!r} (expected jobs.<module>.<function>)")
    try:
        fn = getattr(importlib.import_module(module), name, None)
    except ModuleNotFoundError:
        fn = None
    if not callable(fn):
        raise ValueError(f"no job function {path!r}")
    return fn


def job_id_for(path, key):
    """A deterministic RQ-safe job id from a job path and a business key (e.g. an order id)."""
    import hashlib
    raw = f"{path.replace('.', '_')}-{key}"
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", raw)
    if safe != raw or len(safe) > 200:
        # "order:1" and "order_1" must not share an id (the second would silently never run)
        safe = safe[:150] + "-" + hashlib.sha256(f"{path}\0{key}".encode()).hexdigest()[:24]
    return safe


def _config():
    """The current Flask app's config, or the process app's, or the environment (worker without app)."""
    from flask import current_app, has_app_context
    if has_app_context():
        return current_app.config
    if process_app is not None:
        return process_app.config
    return {"REDIS_URL": os.environ.get("PATRON_REDIS_URL") or None,
            "JOBS_QUEUE": os.environ.get("PATRON_JOBS_QUEUE") or QUEUE}


def redis_url():
    """The configured Redis URL, or None when jobs run in-process."""
    return _config().get("REDIS_URL") or None


def redis_connection(url=None):
    """A Redis client for ``url`` or the configured one (one connection pool per URL per process)."""
    return platform_redis.connection(url or redis_url())


def queue_name():
    """The configured queue (PATRON_JOBS_QUEUE, default ``default``)."""
    return _config().get("JOBS_QUEUE") or QUEUE


def queue(connection=None, name=None):
    """The RQ queue (JSON serializer: job arguments are ids and keys, never pickled objects)."""
    from rq import Queue
    from rq.serializers import JSONSerializer
    return Queue(name or queue_name(), connection=connection or redis_connection(),
                 serializer=JSONSerializer)


@dataclass
class JobRef:
    """What enqueue() did: ``status`` is queued or requeued (RQ), duplicate, succeeded or failed (inline)."""
    id: str
    path: str
    status: str
    result: object = None
    error: str = None
    extra: dict = field(default_factory=dict)


def enqueue(path, *args, job_id=None, **kwargs):
    """Run the job ``path`` with ``args``/``kwargs``: on RQ when PATRON_REDIS_URL is set, else inline now.

    Call it after your transaction commits: a queued job may start before an open transaction
    ends and would not see its rows.

    Args:
        path: dotted path of the job function, e.g. ``"jobs.ledger.reconcile"``.
        *args: JSON-serialisable arguments (ids and keys only).
        job_id: deterministic id (``[A-Za-z0-9_-]``, see ``job_id_for``); with one, the job runs
            once however often it is enqueued (RQ unique enqueue + a unique row in ``job_run``).
        **kwargs: JSON-serialisable keyword arguments for the job.

    Returns:
        JobRef.

    Raises:
        ValueError: unknown job path or malformed job id.
    """
    fn = resolve(path)
    if job_id is not None and (not isinstance(job_id, str) or not JOB_ID_RE.fullmatch(job_id)):
        raise ValueError(f"job id {job_id!r} must be 1-200 characters of A-Z a-z 0-9 _ -")
    # Inline runs see exactly what a worker would after the JSON round trip, so code that passes
    # a model object (or a tuple, or a datetime) fails the same way with and without Redis.
    try:
        args, kwargs = json.loads(json.dumps([list(args), kwargs], allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"job arguments of {path} must be JSON values (ids and keys): {exc}") from None
    opts = options(fn)
    url = redis_url()
    if not url:
        return runner.execute_inline(path, job_id or f"inline-{uuid.uuid4().hex}", args, kwargs, opts)
    from rq import Retry
    from rq.exceptions import DuplicateJobError
    q = queue(redis_connection(url))
    rq_id = job_id or f"{path.replace('.', '_')}-{uuid.uuid4().hex}"
    run_args = [path, rq_id, list(args), kwargs, None, "rq"]
    retry = Retry(max=opts["retries"], interval=opts["intervals"] or 0) if opts["retries"] else None
    try:
        q.enqueue_call(RUNNER, args=run_args, job_id=rq_id, unique=job_id is not None, retry=retry,
                       timeout=opts["timeout"], description=f"{path}{tuple(args)!r}"[:500],
                       result_ttl=86400, failure_ttl=7 * 86400)
    except DuplicateJobError:
        return _on_duplicate(q, path, rq_id)
    return JobRef(rq_id, path, "queued")


def _on_duplicate(q, path, rq_id):
    """A job with this id exists: leave it, unless it failed, in which case run it again."""
    from rq.exceptions import NoSuchJobError
    from rq.job import Job, JobStatus
    try:
        existing = Job.fetch(rq_id, connection=q.connection, serializer=q.serializer)
        if existing.get_status() == JobStatus.FAILED:
            # enqueueing a failed unique job again is how a caller retries it by hand
            existing.requeue()
            log.info("job %s %s had failed; requeued", path, rq_id)
            return JobRef(rq_id, path, "requeued")
    except NoSuchJobError:
        pass  # expired meanwhile; job_run still stops a second successful run
    log.info("job %s already enqueued as %s", path, rq_id)
    return JobRef(rq_id, path, "duplicate")


def periodic_jobs():
    """Every ``PERIODIC = [(dotted_path, cron_expr), ...]`` of the job modules in MODULES, checked.

    Returns:
        list of (path, cron_expr) in module order.

    Raises:
        ValueError: a declared path does not resolve or a cron expression is invalid.
    """
    from croniter import croniter
    out = []
    for name in MODULES:
        module = importlib.import_module(f"jobs.{name}")
        for entry in getattr(module, "PERIODIC", ()):
            path, expr = entry
            resolve(path)
            if not croniter.is_valid(expr) or len(expr.split()) != 5:
                raise ValueError(f"jobs.{name}.PERIODIC: {path}: invalid cron expression {expr!r}")
            out.append((path, expr))
    seen = set()
    for path, _ in out:
        if path in seen:
            raise ValueError(f"periodic job {path} declared twice")
        seen.add(path)
    return out


@functools.lru_cache(maxsize=None)
def _tz(name):
    from zoneinfo import ZoneInfo
    return ZoneInfo(name)


# the executor: imported last because it builds on the names above (it is part of this package)
from jobs import runner  # noqa: E402
