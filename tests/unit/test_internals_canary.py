"""Canaries: the library internals Patron builds on still behave as the code assumes (pinned in setup.cfg).

Each failure names the internal, the code that relies on it and the pin to revisit. The peewee pool's
internals are checked with app/db.py.
"""
import datetime as dt
import importlib.metadata
import inspect
import json

import pytest

from jobs import runner

RQ_PIN = "rq>=3.0,<3.1 in setup.cfg"
DURABLE_PIN = "durable-rules>=2.0.28,<2.1 in setup.cfg"


def _need(obj, name, user, pin):
    assert hasattr(obj, name), f"{getattr(obj, '__name__', obj)}.{name} is gone: {user} relies on it ({pin})"


def test_rq_version_is_the_pinned_minor():
    version = importlib.metadata.version("rq")
    assert version.startswith("3.0."), f"rq {version} installed; jobs.runner was checked against 3.0 ({RQ_PIN})"


def test_rq_cron_internals_used_by_jobs_runner():
    from rq import Queue
    from rq.cron import CronJob, CronScheduler
    from rq.exceptions import DuplicateJobError  # noqa: F401 - imported by name in jobs.runner
    for name in ("enqueue_jobs", "register_birth", "register_death", "heartbeat", "save",
                 "calculate_sleep_interval", "get_jobs", "all"):
        _need(CronScheduler, name, "jobs.runner._cron_loop / build_cron_scheduler", RQ_PIN)
    for name in ("set_enqueue_time", "should_run", "get_next_enqueue_time", "enqueue"):
        _need(CronJob, name, "jobs.runner.PeriodicCronJob", RQ_PIN)
    params = inspect.signature(CronJob.__init__).parameters
    for name in ("queue_name", "func_name", "cron", "name", "job_timeout"):
        assert name in params, f"rq.cron.CronJob() lost its {name!r} argument: PeriodicCronJob passes it ({RQ_PIN})"
    assert "unique" in inspect.signature(Queue.enqueue_call).parameters, (
        f"Queue.enqueue_call(unique=...) is gone: jobs.enqueue and PeriodicCronJob rely on it ({RQ_PIN})")


def test_rq_cron_scheduler_enqueues_then_records_the_tick():
    """PeriodicCronJob.enqueue reads next_enqueue_time (RQ has not moved it yet); the scheduler's
    _cron_jobs list is where add_periodic puts jobs; set_enqueue_time moves next_enqueue_time on."""
    scheduler = runner._cron_classes()(connection=object())  # no Redis needed for this
    assert isinstance(getattr(scheduler, "_cron_jobs", None), list), (
        f"rq.cron.CronScheduler._cron_jobs is gone: PeriodicCronScheduler.add_periodic appends to it ({RQ_PIN})")
    job = scheduler.add_periodic("jobs.platform.prune_job_runs", "* * * * *", runner._tz("UTC"), "q")
    assert scheduler.get_jobs() == [job]
    assert job.job_options.get("job_timeout") is not None, "CronJob.job_options['job_timeout'] moved"
    due = runner.utcnow() - dt.timedelta(seconds=1)
    job.next_enqueue_time = due
    seen = []
    job.enqueue = lambda connection: seen.append((job.next_enqueue_time, job.latest_enqueue_time))
    assert scheduler.enqueue_jobs() == [job]
    assert seen == [(due, None)], (
        f"rq's CronScheduler now records the tick before enqueueing it: PeriodicCronJob.enqueue's "
        f"tick choice and tests/jobs/test_jobs.py's waits assume the opposite ({RQ_PIN})")
    assert job.latest_enqueue_time is not None and job.next_enqueue_time > runner.utcnow(), (
        f"CronJob.set_enqueue_time no longer moves next_enqueue_time on ({RQ_PIN})")


@pytest.mark.durable
def test_durable_rules_version_is_the_pinned_minor():
    version = importlib.metadata.version("durable_rules")
    assert version.startswith("2.0."), f"durable_rules {version}; app.engine.durable was checked on 2.0 ({DURABLE_PIN})"


@pytest.mark.durable
def test_durable_rules_engine_module_calls_used_by_the_adapter():
    import durable_rules_engine as dre
    for name in ("create_ruleset", "delete_ruleset", "assert_event", "assert_fact", "retract_fact",
                 "start_action_for_state", "complete_and_start_action", "error"):
        _need(dre, name, "app.engine.durable.Adapter", DURABLE_PIN)
    handle = dre.create_ruleset("canary@00000000", json.dumps(
        {"r0": {"all": [{"m": {"k": 1}}]}, "r1": {"all": [{"m": {"$gt": {"n": 5}}}]}}))
    try:
        result = dre.assert_fact(handle, json.dumps({"id": "c1", "k": 1, "n": 9}))
        assert result[0] == 0, f"assert_fact returned {result!r}: the adapter expects (0, state) on a match"
        started = dre.start_action_for_state(handle, result[1])
        fired = []
        message = started[1] if started else None
        while message:
            # the adapter reads the rule name from the message text: '{"r<index>":...'
            assert message.startswith('{"r'), f"action message format changed: {message[:60]!r} ({DURABLE_PIN})"
            fired.append(int(message[3:message.index('"', 2)]))
            message = dre.complete_and_start_action(handle, result[1])
        assert sorted(fired) == [0, 1], f"fired {fired}: the adapter's drain loop no longer sees every rule"
        dre.retract_fact(handle, json.dumps({"id": "c1", "k": 1, "n": 9}))
        miss = dre.assert_fact(handle, json.dumps({"id": "c2", "k": 2, "n": 1}))
        assert miss[0] == 1, f"assert_fact returned {miss!r} on no match: the adapter treats 1 as 'no rule matched'"
    finally:
        dre.delete_ruleset(handle)
