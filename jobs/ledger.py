"""Ledger jobs: reconciliation, withdrawal-hold expiry, lot expiry (plain functions, own connection, idempotent)."""
import logging

from app.db import connection, db
from app.errors import Problem
from app.models.core import utcnow
from app.models.ledger import LedgerHold, LedgerLot
from jobs import job

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
    from app.services.ledger_reconcile import reconcile as run
    with connection():  # own connection, or the caller's when run inline inside one
        with db.atomic():
            report = run(store=True)
    failed = [name for name, c in report["checks"].items() if not c["ok"]]
    if failed:
        log.error("ledger reconciliation found drift in %s", ", ".join(failed))
    return {"ok": report["ok"], "failed_checks": failed}


def _expire(op, ids, key_prefix):
    from app.services import ledger
    done = 0
    for ident in ids:
        body = {"hold_id": ident} if op == "expire_hold" else {"lot_id": ident}
        try:
            # The deterministic key makes a rerun (or a racing worker) a replay, not a second journal.
            ledger.execute(op, body, "system", idempotency_key=f"{key_prefix}:{ident}", client="system")
            done += 1
        except Problem as exc:  # resolved meanwhile (settled, spent): nothing to expire
            log.info("%s %s skipped: %s", op, ident, exc.code)
    return done


@job(retries=2)  # each expiry is keyed (expire-hold:<id>): safe to repeat
def expire_holds(limit=BATCH):
    """Release withdrawal holds past their policy timeout (state ``expired``), one journal each.

    Returns:
        number of holds expired.
    """
    with connection():
        ids = [h.id for h in LedgerHold.select(LedgerHold.id)
               .where((LedgerHold.state == "held") & (LedgerHold.kind == "withdraw")
                      & (LedgerHold.expires_at <= utcnow()))
               .order_by(LedgerHold.id).limit(limit)]
        return _expire("expire_hold", ids, "expire-hold")


@job(retries=2)  # each expiry is keyed (expire-lot:<id>): safe to repeat
def expire_lots(limit=BATCH):
    """Move the remainder of every expired open lot to breakage, one journal per lot.

    Returns:
        number of lots expired.
    """
    with connection():
        ids = [lot.id for lot in LedgerLot.select(LedgerLot.id)
               .where((LedgerLot.state == "open") & (LedgerLot.expires_at <= utcnow()))
               .order_by(LedgerLot.id).limit(limit)]
        return _expire("expire_lot", ids, "expire-lot")
