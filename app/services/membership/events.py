"""Member events: stored verbatim (idempotent by event id, simulation input) and turned into growth, points and level changes."""
import json
import peewee as pw

from app.db import db, transactional
from app.errors import Problem
from app.models.membership import MemberEvent
from app.platform import clock, idempotency
from app.services.membership import benefits
from app.services.membership import growth
from app.services.membership import late
from app.services.membership import plans
from app.services.membership import points
from app.services.membership import policy as mp
from app.services.membership.state import LIVE, canonical  # noqa: F401  (canonical: the stored body)
from app.platform import sql as fastsql
from app.platform import timefmt

MAX_BATCH = 500


def _digest(event):
    return idempotency.digest("members.event", event)


def _replay(row, digest):
    """The stored result of an event id: the idempotency contract's replay rule, keyed by event id."""
    def reused():
        return Problem(409, "event-id-reused", "Event id reused",
                       f"event {row.event_id!r} was already received with a different body", event_id=row.event_id)
    _, out, _ = idempotency.replay(row.digest, digest, 200, row.result, conflict=reused)
    out["replayed"] = True
    return out


def _normalise(cfg, event):
    if event["type"] not in cfg.event_types:
        raise Problem(422, "unknown-event-type", "Unknown event type",
                      f"event type {event['type']!r} is neither built in nor declared in the membership policy",
                      allowed=sorted(cfg.event_types))
    if event["type"] in ("order_paid", "order_refunded") and (event.get("amount_fen") is None
                                                             or not event.get("order_ref")):
        raise Problem(422, "validation-failed", "Validation failed", f"{event['type']} needs amount_fen and order_ref",
                      errors=[{"pointer": "/amount_fen", "validator": "required",
                               "message": "amount_fen and order_ref are required for orders"}])
    at = timefmt.parse(event["occurred_at"], "/occurred_at", offset_required=True) if event.get("occurred_at") else clock.now()
    return at


def _process(cfg, event, digest, actor, st=LIVE):
    """One event inside the caller's transaction; returns the result dict (stored for replays)."""
    try:
        at = _normalise(cfg, event)
    except Problem:
        existing = st.stored_event(event["event_id"])
        if existing is not None:  # accepted under an earlier policy: a retry still gets its answer
            return _replay(existing, digest)
        raise
    member = st.member(cfg, event["member_id"], at)
    # Checked under the member lock: a concurrent twin of this event has committed or not started.
    existing = st.stored_event(event["event_id"])
    if existing is not None:
        return _replay(existing, digest)
    at, late_booking = late.book(cfg, member, at, st)
    if st.live:
        with fastsql.deferred():  # the event's journal rows, decisions, snapshot and stored event: one round trip
            result = apply(cfg, event, digest, actor, at, member, late_booking)
    else:
        result = apply(cfg, event, digest, actor, at, member, late_booking, st)
    return late.after_payment(cfg, member, event, result, at, actor, st)


def apply(cfg, event, digest, actor, at, member, late_booking=None, st=LIVE):
    """What one accepted event does to its member: growth, points, cashback, level; the stored event.

    The one implementation of a member event's effects: the live path (``ingest``) and the simulation
    (``app.services.simulation.memory``) both call it, each with its state.
    """
    member_ref = member.member_ref
    plan = plans.active_plan(cfg, member_ref, at, st)
    facts = {"type": event["type"], "amount_fen": event.get("amount_fen"), "channel": event.get("channel"),
             "order_ref": event.get("order_ref"), "attributes": event.get("attributes") or {},
             "member": {"level": member.level, "growth": member.growth, "paid": plan is not None,
                        "plan": plan.get("code") if plan else None}}
    g = growth.apply_event(cfg, member, event, facts, at, plan, st)
    p = points.apply_event(cfg, member, event, facts, at, plan, actor, st)
    cashback = benefits.apply_cashback(cfg, member, event, at, plan, actor, st)
    change = growth.finish(cfg, member, at, f"event {event['event_id']} ({event['type']})", event["event_id"], st=st)
    result = {"event_id": event["event_id"], "member_id": member_ref, "type": event["type"],
              "occurred_at": timefmt.iso(at), "status": "accepted", "replayed": False, "policy_version": cfg.version,
              "paid": plan is not None, "growth": g, "points": p, "cashback": cashback,
              "level": {"level": member.level, "changed": change is not None, "change": change}}
    if late_booking:
        result["late"] = late_booking
    st.store_event(event, digest, at, plan is not None, cfg.version, result)
    return result


def process(cfg, event, actor, st, digest=None):
    """One member event against a simulation's state (no transaction): the live ``_process`` unchanged.

    ``digest``: the body's fingerprint when the caller has one (the simulation hashes the canonical line it
    read), else the idempotency digest.
    """
    return _process(cfg, event, digest or _digest(event), actor, st)


def ingest(event, actor, cfg=None):
    """Accept one member event exactly once.

    Args:
        event: validated body (event_id, member_id, type, occurred_at?, amount_fen?, order_ref?, channel?, attributes?).
        actor: who posts it.
        cfg: membership Config to apply (default: the active policy set's; simulations pass a candidate).

    Returns:
        (created, result): created False when the event id was seen before with the same body.

    Raises:
        Problem: event-id-reused (409), unknown-event-type (422), validation-failed (422).
    """
    cfg = cfg or mp.current()
    digest = _digest(event)

    @transactional()
    def run(strict):
        points.begin_budget(strict)
        out = _process(cfg, event, digest, actor)
        points.settle_budget()
        return out

    try:
        try:
            result = run(False)
        except points.BudgetShortfall:
            result = run(True)
    except pw.IntegrityError:
        # The same event id committed by a concurrent request (other member row): replay it.
        if db.in_transaction():
            raise
        row = MemberEvent.get_or_none(MemberEvent.event_id == event["event_id"])
        if row is None:
            raise
        result = _replay(row, digest)
    return not result.get("replayed"), result


# Items per commit inside a batch. The ledger takes its system-account shards with SKIP LOCKED (never
# waiting for one), so the shards a multi-item transaction holds until commit cannot deadlock concurrent
# batches any more (see docs/ledger.md); members are taken in one order. Both backends: fewer commits.
def _chunk():
    return 25


def ingest_batch(events, actor):
    """Accept many events; per-item results in input order.

    Items are taken grouped by member (stable order, so concurrent batches lock members in one
    global order) and committed in chunks (``_chunk()``), each item in its own savepoint: far fewer
    commits than single posts, while locks are held only for a chunk. Every item stands alone
    (a failed item does not undo the others); a retried batch replays what was committed.
    """
    cfg = mp.current()
    if len(events) > MAX_BATCH:
        raise Problem(422, "batch-too-large", "Batch too large", f"at most {MAX_BATCH} events per batch")
    order = sorted(range(len(events)), key=lambda i: events[i]["member_id"])
    results = [None] * len(events)
    seen = {}

    def item(i, chunk_seen):
        ev = events[i]
        digest = _digest(ev)
        first = chunk_seen.get(ev["event_id"]) or seen.get(ev["event_id"])
        if first is not None:
            if first[0] != digest:
                return {"status": 409, "event_id": ev["event_id"],
                        "problem": Problem(409, "event-id-reused", "Event id reused",
                                           "event id repeated in the batch with another body").to_dict()}
            return {"status": 200, "event_id": ev["event_id"], "result": dict(first[1], replayed=True)}
        mark = points.budget_mark()
        try:
            with db.atomic():
                res = _process(cfg, ev, digest, actor)
            chunk_seen[ev["event_id"]] = (digest, res)
            return {"status": 200 if res.get("replayed") else 201, "event_id": ev["event_id"], "result": res}
        except Problem as exc:
            points.budget_reset(mark)
            return {"status": exc.status, "event_id": ev["event_id"], "problem": exc.to_dict()}
        except pw.IntegrityError:
            points.budget_reset(mark)
            # a concurrent request committed this event id first (savepoint rolled back)
            row = MemberEvent.get_or_none(MemberEvent.event_id == ev["event_id"])
            if row is None:
                raise
            try:
                return {"status": 200, "event_id": ev["event_id"], "result": _replay(row, digest)}
            except Problem as exc:
                return {"status": exc.status, "event_id": ev["event_id"], "problem": exc.to_dict()}

    @transactional()
    def run(chunk, strict):
        points.begin_budget(strict)
        chunk_seen, out = {}, {}
        for i in chunk:
            out[i] = item(i, chunk_seen)
        points.settle_budget()
        return out, chunk_seen

    size = _chunk()
    for start in range(0, len(order), size):
        chunk = order[start:start + size]
        try:
            out, chunk_seen = run(chunk, False)
        except points.BudgetShortfall:
            out, chunk_seen = run(chunk, True)
        for i, r in out.items():
            results[i] = r
        seen.update(chunk_seen)
    return results
