"""Simulations requested through the API: a stored run, replayed by a job, with progress and the report."""
import json
import os
import shutil
import tempfile
import time
import uuid

from app.db import db, transactional
from app.errors import Problem
from app.models.simulation import SimulationRun
from app.platform import clock
from app.platform.timefmt import iso


def _dict(run, with_report=True):
    out = {"id": run.run_id, "status": run.status, "spec": json.loads(run.spec),
           "progress": {"done": run.done, "total": run.total,
                        "percent": round(100.0 * run.done / run.total, 1) if run.total else 0.0},
           "created_by": run.created_by, "created_at": iso(run.created_at), "started_at": iso(run.started_at),
           "finished_at": iso(run.finished_at), "error": run.error}
    if with_report:
        out["result"] = json.loads(run.report) if run.report else None
    return out


def _summary_spec(body):
    """The stored spec: policy files are kept (the job needs them), inline records too."""
    return json.dumps(body, ensure_ascii=False, sort_keys=True)


def create(body, actor):
    """Store a run and enqueue its job (inline when no Redis is configured).

    Returns:
        the run dict (status queued, or already finished when the job ran inline).
    """
    from app.services.simulation import runner
    import jobs
    import datetime as dt
    days = {}
    for key in ("from", "to"):
        try:
            days[key] = dt.date.fromisoformat(body[key])
        except ValueError:
            raise Problem(422, "validation-failed", "Validation failed", f"{key} is not a valid date",
                          errors=[{"pointer": f"/{key}", "validator": "format", "message": "expected YYYY-MM-DD"}]) \
                from None
    if days["to"] <= days["from"]:
        raise Problem(422, "validation-failed", "Validation failed", "to must be after from",
                      errors=[{"pointer": "/to", "validator": "minimum", "message": "must be after from"}])
    for key in ("candidate", "baseline"):  # refuse a bad set now, not in the job
        if body.get(key) is not None:
            runner.policy_files(body[key])
    run_id = uuid.uuid4().hex

    @transactional()
    def store():
        SimulationRun.create(run_id=run_id, status="queued", spec=_summary_spec(body), created_by=actor,
                             created_at=clock.now())
    store()
    jobs.enqueue("jobs.simulation.run", run_id, job_id=jobs.job_id_for("jobs.simulation.run", run_id))
    return get(run_id)


def get(run_id):
    run = SimulationRun.get_or_none(SimulationRun.run_id == run_id)
    if run is None:
        raise Problem(404, "simulation-not-found", "Simulation not found", f"simulation {run_id!r} does not exist")
    return _dict(run)


def _update(run_id, **fields):
    @transactional()
    def write():
        SimulationRun.update(**fields).where(SimulationRun.run_id == run_id).execute()
    write()


def execute(run_id, progress=None):
    """The job body: replay, store progress (at most once a second; also told to ``progress(done, total)``)
    and the canonical JSON report."""
    from app.services.simulation import report, runner
    run = SimulationRun.get_or_none(SimulationRun.run_id == run_id)
    if run is None or run.status in ("succeeded", "failed"):
        return None
    body = json.loads(run.spec)
    _update(run_id, status="running", started_at=clock.now(), error=None)
    work = tempfile.mkdtemp(prefix="patron-simrun-")
    last = [0.0]

    def stored(done, total):
        now = time.monotonic()
        if now - last[0] >= 1.0 or done >= total:
            last[0] = now
            _update(run_id, done=done, total=total)
            if progress is not None:
                progress(done, total)
    try:
        events = body.get("events") or "db"
        if isinstance(events, dict):
            path = os.path.join(work, "records.jsonl")
            with open(path, "w", encoding="utf-8") as fh:
                for rec in events["records"]:
                    fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
            events = path
        spec = {"candidate": body["candidate"], "baseline": body.get("baseline") or "active", "events": events,
                "from": body["from"], "to": body["to"], "members": body.get("members"),
                "point_value_fen": body.get("point_value_fen", 1), "workdir": work}
        rep, _ = report.build(runner.execute(spec, stored))
        _update(run_id, status="succeeded", report=report.to_json(rep), finished_at=clock.now())
        return {"id": run_id, "status": "succeeded"}
    except Problem as exc:
        _update(run_id, status="failed", error=f"{exc.code}: {exc.detail}", finished_at=clock.now())
        return {"id": run_id, "status": "failed", "error": exc.code}
    except Exception as exc:  # noqa: BLE001 - the run records the failure; the job log has the trace
        db.rollback() if db.in_transaction() else None
        _update(run_id, status="failed", error=f"internal error ({type(exc).__name__})", finished_at=clock.now())
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def listing(limit=50):
    """Simulations newest first, without their reports (the reports list)."""
    q = SimulationRun.select().order_by(SimulationRun.id.desc()).limit(limit)
    return [_dict(run, with_report=False) for run in q]
