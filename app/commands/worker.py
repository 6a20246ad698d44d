"""``patron worker`` (RQ worker + cron scheduler) and ``patron jobs`` (list periodic jobs, enqueue one)."""
import datetime as dt
import json
import sys

import click

from app.platform import clock


def cmd_worker(args):
    from app.cli import _app
    from jobs.runner import run_worker
    app = _app(args)
    if not app.config.get("REDIS_URL"):
        print("error: patron worker needs PATRON_REDIS_URL (without Redis, `patron serve` runs jobs "
              "in-process)", file=sys.stderr)
        return 2
    _load_policies(app)
    if args.metrics_port is not None:
        _serve_metrics(args.metrics_host, args.metrics_port)
    queues = [q.strip() for q in (args.queues or app.config["JOBS_QUEUE"]).split(",") if q.strip()]
    run_worker(app, queues=queues, burst=args.burst, cron=not args.no_cron, name=args.name)
    return 0


def _serve_metrics(host, port):
    """/metrics of this worker process (patron_jobs_total and the rest) for Prometheus to scrape."""
    from prometheus_client import start_http_server

    from app.metrics import REGISTRY
    server, _ = start_http_server(port, addr=host, registry=REGISTRY)
    bound = server.server_address[1]
    print(f"worker metrics on http://{host}:{bound}/metrics", file=sys.stderr, flush=True)


def _load_policies(app):
    # the engine is loaded once per worker process, like the web process does at start-up
    from app import policy
    from app.db import connection
    with app.app_context(), connection():
        policy.startup(app)


def cmd_jobs_list(args):
    from app.cli import _app
    from jobs import _tz, periodic_jobs
    from jobs.runner import next_tick
    app = _app(args)
    tz = _tz(app.config.get("TIMEZONE") or "UTC")
    now = clock.now().replace(tzinfo=dt.timezone.utc)
    rows = [(path, expr, next_tick(expr, now, tz).astimezone(tz).isoformat(timespec="minutes"))
            for path, expr in periodic_jobs()]
    if args.json:
        from app.cli import echo_json
        echo_json([{"job": path, "cron": expr, "next_run": nxt, "timezone": tz.key} for path, expr, nxt in rows])
        return 0
    width = max([len(r[0]) for r in rows] + [4])
    print(f"{'job':<{width}}  {'cron':<16}  next run ({tz.key})")
    for path, expr, nxt in rows:
        print(f"{path:<{width}}  {expr:<16}  {nxt}")
    return 0


def cmd_jobs_run(args):
    from app.cli import Progress, _app
    from app.db import connection
    from jobs import enqueue, reporting
    app = _app(args)
    try:
        job_args = [json.loads(a) for a in args.args]
    except json.JSONDecodeError as exc:
        print(f"error: job arguments are JSON values: {exc}", file=sys.stderr)
        return 2
    with app.app_context(), connection(), Progress(args.path) as bar:
        try:
            with reporting(bar):  # inline (no Redis): the job runs here and draws its progress
                ref = enqueue(args.path, *job_args, job_id=args.job_id)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        if args.wait and ref.status in ("queued", "requeued", "duplicate"):
            ref = _wait(ref, bar, args.wait_timeout)
    print(json.dumps({"id": ref.id, "job": ref.path, "status": ref.status, "result": ref.result,
                      "error": ref.error}, ensure_ascii=False, default=str))
    return 0 if ref.status in ("succeeded", "queued", "requeued", "duplicate") else 1


def _wait(ref, bar, timeout):
    """Wait for a job queued on RQ to end, drawing the progress it reports (``jobs.progress``).

    Returns:
        a JobRef: succeeded (with the job's result), failed (with the last line of its error), or, past
        ``timeout`` seconds, the RQ status it still has (queued, started...).
    """
    import time

    from rq.exceptions import NoSuchJobError
    from rq.job import Job, JobStatus

    from jobs import JobRef, queue, redis_connection
    q = queue(redis_connection())
    deadline = time.monotonic() + timeout
    while True:
        try:
            job = Job.fetch(ref.id, connection=q.connection, serializer=q.serializer)
        except NoSuchJobError:
            return JobRef(ref.id, ref.path, "expired", error="the job is no longer in Redis (see job_run)")
        status = job.get_status()
        done_total = (job.meta or {}).get("progress")
        if done_total:
            bar(*done_total)
        if status == JobStatus.FINISHED:
            out = job.return_value() or {}
            return JobRef(ref.id, ref.path, "succeeded" if out.get("status") != "duplicate" else "duplicate",
                          result=out.get("result"))
        if status in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
            lines = (job.exc_info or "").strip().splitlines()
            return JobRef(ref.id, ref.path, "failed", error=lines[-1] if lines else str(status))
        if time.monotonic() >= deadline:
            return JobRef(ref.id, ref.path, str(getattr(status, "value", status)),
                          error=f"still {getattr(status, 'value', status)} after {timeout} s")
        time.sleep(0.2)


def register(root):
    from app.cli import command, group, json_option
    command(root, "worker", cmd_worker,
            click.Option(["--queues"], default=None,
                         help="comma separated queue names (default PATRON_JOBS_QUEUE or 'default')"),
            click.Option(["--burst"], is_flag=True, help="process queued jobs, then exit (no cron)"),
            click.Option(["--no-cron"], is_flag=True,
                         help="do not run the cron scheduler here (several are safe, one is enough)"),
            click.Option(["--name"], default=None, help="worker name (default: host + pid)"),
            click.Option(["--metrics-port"], type=click.IntRange(0, 65535), default=None,
                         help="serve this worker's Prometheus metrics (job counters) on this port (0: any free one)"),
            click.Option(["--metrics-host"], default="127.0.0.1", show_default=True, help="address for --metrics-port"),
            kind="write", help="run an RQ worker and the cron scheduler for periodic jobs")
    grp = group(root, "jobs", "jobs")
    command(grp, "list", cmd_jobs_list, json_option(), kind="read", help="periodic jobs and their next run")
    command(grp, "run", cmd_jobs_run, click.Argument(["path"]),
            click.Argument(["args"], nargs=-1),
            click.Option(["--job-id"], default=None, help="deterministic id: the job runs once"),
            click.Option(["--wait"], is_flag=True,
                         help="on RQ: wait for the job to end (a progress bar on a terminal); "
                              "exit 1 unless it succeeds"),
            click.Option(["--wait-timeout"], type=click.IntRange(1, 86400), default=3600, show_default=True,
                         help="seconds --wait waits at most"),
            kind="write", help="enqueue a job (inline without Redis); arguments are JSON values, "
                               "e.g. jobs.platform.prune_job_runs 42")
