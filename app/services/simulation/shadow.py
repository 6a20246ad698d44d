"""Shadow mode: a candidate policy set evaluated on live member events beside the active one, by the live code in rolled-back transactions; differences recorded."""
import json
import logging
import threading
import time

from app.db import transactional, write_transaction
from app.errors import Problem
from app.models.membership import MemberEvent
from app.models.simulation import ShadowDiff, ShadowSet
from app.platform import clock, timefmt

log = logging.getLogger(__name__)

ACTOR = "system:shadow"
BATCH = 100
CACHE_SECONDS = 1.0
_cache = {"at": 0.0, "id": None}
_cache_lock = threading.Lock()
_configs = {}


class _Undo(Exception):
    """Raised inside an evaluation transaction so nothing it wrote is kept."""


def _dict(s):
    return {"id": s.id, "version": s.version, "status": s.status, "started_by": s.started_by,
            "started_at": clock_iso(s.started_at), "stopped_at": clock_iso(s.stopped_at)}


def clock_iso(v):
    return None if v is None else v.isoformat() + "Z"


def start(candidate, actor):
    """Start shadowing ``candidate`` (a folder, {"version"} or {"files"}); a running shadow is stopped first."""
    from app.services.simulation.runner import policy_files
    files = policy_files(candidate)
    from app.policy import PolicySet
    version = PolicySet(files).version

    @transactional()
    def run():
        ShadowSet.update(status="stopped", stopped_at=clock.now()).where(ShadowSet.status == "running").execute()
        return ShadowSet.create(version=version, files=json.dumps(files, ensure_ascii=False, sort_keys=True),
                                status="running", started_by=actor, started_at=clock.now())
    s = run()
    forget()
    return _dict(s)


def stop():
    """Stop the running shadow (its differences stay for the report)."""
    @transactional()
    def run():
        s = ShadowSet.select().where(ShadowSet.status == "running").first()
        if s is None:
            raise Problem(404, "no-shadow", "No shadow running", "no candidate set is being shadowed")
        ShadowSet.update(status="stopped", stopped_at=clock.now()).where(ShadowSet.id == s.id).execute()
        return ShadowSet.get_by_id(s.id)
    s = run()
    forget()
    return _dict(s)


def forget():
    with _cache_lock:
        _cache.update(at=0.0, id=None)


def running_id():
    """The running shadow's id or None, looked up at most once a second per process (live events call this)."""
    now = time.monotonic()
    if now - _cache["at"] < CACHE_SECONDS:
        return _cache["id"]
    try:
        row = ShadowSet.select(ShadowSet.id).where(ShadowSet.status == "running").first()
    except Exception:  # noqa: BLE001 - table missing before migrations: no shadow
        row = None
    with _cache_lock:
        _cache.update(at=now, id=row.id if row else None)
    return _cache["id"]


def after_ingest(event_ids):
    """Called by the member-event API after its commit: hand the batch to a job when a shadow runs."""
    shadow_id = running_id()
    if shadow_id is None or not event_ids:
        return None
    import jobs
    ids = sorted(set(event_ids))
    refs = []
    for i in range(0, len(ids), BATCH):
        chunk = ids[i:i + BATCH]
        key = f"{shadow_id}-" + __import__("hashlib").sha256("\0".join(chunk).encode()).hexdigest()[:24]
        refs.append(jobs.enqueue("jobs.simulation.shadow_events", shadow_id, chunk,
                                 job_id=jobs.job_id_for("jobs.simulation.shadow_events", key)))
    return refs


def _candidate_config(shadow):
    cfg = _configs.get(shadow.version)
    if cfg is None:
        from app import engine
        from app.policy import PolicySet
        from app.services.membership.policy import Config
        ps = PolicySet(json.loads(shadow.files))
        engine.prepare(ps)
        cfg = _configs[shadow.version] = Config(ps)
    return cfg


def _what_if(cfg, event):
    """The result ``events.ingest`` gives for ``event`` under ``cfg`` now, with every write rolled back."""
    from app.services.membership import events
    try:
        with write_transaction():
            _, result = events.ingest(event, ACTOR, cfg=cfg)
            raise _Undo(result)
    except _Undo as undo:
        return undo.args[0]
    except Problem as exc:
        return {"problem": exc.code}


def _by_rule(result, kind):
    out = {}
    for e in ((result.get(kind) or {}).get("entries") or []):
        amount = e["delta"] if kind == "growth" else e["points"]
        out[e["rule"]] = out.get(e["rule"], 0) + int(amount)
    return out


def evaluate_events(shadow_id, event_ids):
    """Evaluate stored live events under the active and the shadow set (same member state, rolled back); store diffs."""
    from app.services.membership import policy as mp
    shadow = ShadowSet.get_or_none(ShadowSet.id == shadow_id)
    if shadow is None:
        return {"events": 0, "differences": 0}
    active, cand = mp.current(), _candidate_config(shadow)
    rows = list(MemberEvent.select().where(MemberEvent.event_id.in_(list(event_ids))).order_by(MemberEvent.id))
    found = 0
    for row in rows:
        event = json.loads(row.body)
        event["occurred_at"] = timefmt.iso(row.occurred_at)
        # a fresh id: under the stored one ingest would replay the live result instead of evaluating
        event["event_id"] = f"shadow-{shadow_id}-{row.id}"
        a, c = _what_if(active, event), _what_if(cand, event)
        diffs = []
        for kind in ("growth", "points"):
            ra, rc = _by_rule(a, kind), _by_rule(c, kind)
            for rule in sorted(set(ra) | set(rc)):
                if ra.get(rule, 0) != rc.get(rule, 0):
                    diffs.append((kind, rule, ra.get(rule, 0), rc.get(rule, 0), None))
        la, lc = (a.get("level") or {}).get("level"), (c.get("level") or {}).get("level")
        if la != lc:
            diffs.append(("level", f"{la} -> {lc}", 0, 0, None))
        if a.get("problem") != c.get("problem"):
            diffs.append(("refusal", f"{a.get('problem')} -> {c.get('problem')}", 0, 0, None))
        for kind, rule, x, y, detail in diffs:
            ShadowDiff.insert(shadow=shadow_id, event_id=row.event_id, member_ref=row.member_ref, kind=kind,
                              rule=rule[:200], active_amount=x, candidate_amount=y, detail=detail,
                              at=row.occurred_at).on_conflict_ignore().execute()
        found += len(diffs)
    return {"events": len(rows), "differences": found}


def report(shadow_id=None):
    """Differences of a shadow (default: the latest): per kind and rule, members, events and amounts."""
    import peewee as pw
    s = (ShadowSet.get_or_none(ShadowSet.id == shadow_id) if shadow_id
         else ShadowSet.select().order_by(ShadowSet.id.desc()).first())
    if s is None:
        raise Problem(404, "no-shadow", "No shadow", "no shadow evaluation exists")
    rows = (ShadowDiff.select(ShadowDiff.kind, ShadowDiff.rule, pw.fn.COUNT(ShadowDiff.id),
                              pw.fn.COUNT(ShadowDiff.member_ref.distinct()), pw.fn.SUM(ShadowDiff.active_amount),
                              pw.fn.SUM(ShadowDiff.candidate_amount))
            .where(ShadowDiff.shadow == s.id).group_by(ShadowDiff.kind, ShadowDiff.rule)
            .order_by(ShadowDiff.kind, ShadowDiff.rule).tuples())
    items = [{"kind": k, "rule": r, "events": int(n), "members": int(m), "active_amount": int(x or 0),
              "candidate_amount": int(y or 0), "difference": int(y or 0) - int(x or 0)} for k, r, n, m, x, y in rows]
    return {"shadow": _dict(s), "active_version": _active_version(), "items": items}


def _active_version():
    from app import policy
    return policy.active().version
