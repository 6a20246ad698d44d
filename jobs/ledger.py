"""Ledger jobs: reconciliation, withdrawal-hold expiry, lot expiry (plain functions, own connection, idempotent)."""
import logging

from app.db import connection, db
from app.errors import Problem
from app.platform import clock
from app.models.ledger import LedgerHold, LedgerLot
from app.platform import timefmt
from jobs import job, progress

log = logging.getLogger(__name__)

PERIODIC = [
    ("jobs.ledger.reconcile", "*/10 * * * *"),
    ("jobs.ledger.expire_holds", "* * * * *"),
    ("jobs.ledger.expire_lots", "5 * * * *"),
]

BATCH = 500


@job(retries=2)  # read-only checks plus one appended report row: safe to repeat
def reconcile():
    """Check every ledger invariant and store the report; drift is logged as an error, never repaired.

    Returns:
        {"ok": bool, "failed_checks": [names]}.
    """
    from app.services.ledger.reconcile import reconcile as run
    with connection():  # own connection, or the caller's when run inline inside one
        with db.atomic():
            report = run(store=True, progress=progress)
    failed = [name for name, c in report["checks"].items() if not c["ok"]]
    if failed:
        log.error("ledger reconciliation found drift in %s", ", ".join(failed))
    return {"ok": report["ok"], "failed_checks": failed}


def _instant(at):
    """The job's instant: ``at`` (ISO 8601 or datetime, for replays) or the controllable clock."""
    if at is None:
        return clock.now()
    return timefmt.parse(at, "/at") if isinstance(at, str) else at


# What each expiry job moves: the ledger operation, its body's id field, and the due rows (by id) at an instant.
EXPIRIES = {
    "hold": ("expire_hold", "hold_id", lambda now: LedgerHold.select(LedgerHold.id).where(
        (LedgerHold.state == "held") & (LedgerHold.kind == "withdraw") & (LedgerHold.expires_at <= now))
        .order_by(LedgerHold.id)),
    "lot": ("expire_lot", "lot_id", lambda now: LedgerLot.select(LedgerLot.id).where(
        (LedgerLot.state == "open") & (LedgerLot.expires_at <= now)).order_by(LedgerLot.id)),
}


def _expire_due(what, limit, at):
    """Run the expiry operation once for each due row (at most ``limit``, by id); returns how many moved."""
    from app.services import ledger
    op, field, due = EXPIRIES[what]
    now = _instant(at)
    done = 0
    with connection():
        ids = [row.id for row in due(now).limit(limit)]
        for ident in ids:
            try:
                # The deterministic key makes a rerun (or a racing worker) a replay, not a second journal.
                ledger.execute(op, {field: ident}, "system", idempotency_key=f"{op.replace('_', '-')}:{ident}",
                               client="system", at=now)
                done += 1
            except Problem as exc:  # resolved meanwhile (settled, spent): nothing to expire
                log.info("%s %s skipped: %s", op, ident, exc.code)
    return done


@job(retries=2)  # each expiry is keyed (expire-hold:<id>): safe to repeat
def expire_holds(limit=BATCH, at=None):
    """Release withdrawal holds past their policy timeout (state ``expired``), one journal each.

    Args:
        limit: at most this many holds per run.
        at: the instant deciding expiry (ISO 8601; default: ``app.platform.clock.now()``).

    Returns:
        number of holds expired.
    """
    return _expire_due("hold", limit, at)


@job(retries=2)  # each expiry is keyed (expire-lot:<id>): safe to repeat
def expire_lots(limit=BATCH, at=None):
    """Move the remainder of every expired open lot to breakage, one journal per lot.

    Args:
        limit: at most this many lots per run.
        at: the instant deciding expiry (ISO 8601; default: ``app.platform.clock.now()``).

    Returns:
        number of lots expired.
    """
    return _expire_due("lot", limit, at)
