"""Ledger reconciliation: recompute every invariant from the append-only entries and report drift, never hide it."""
import json

from app.db import db
from app.platform import clock
from app.models.ledger import LedgerAccount, LedgerCustomer, LedgerReconciliation
from app.services.ledger import core, lot_operations
from app.platform import timefmt

MAX_ROWS = 100  # drift rows listed per check (the count is always exact)


def _rows(sql, params=()):
    return db.execute_sql(sql, list(params)).fetchall()


def _scope_ids(customers):
    if customers is None:
        return None
    ids = [a.id for a in LedgerAccount.select(LedgerAccount.id).join(LedgerCustomer)
           .where(LedgerCustomer.external_ref.in_(list(customers)))]
    return ids or [-1]


# Number of checks reconcile() runs: the total of a progress bar.
CHECKS = 10


def reconcile(customers=None, store=False, progress=None):
    """Check the ledger's invariants.

    Checks: every journal has >= 2 entries and sums to zero per asset; snapshots per asset sum to
    zero (system accounts included); every snapshot row equals the sum of its entries and its latest
    entry's balance_after; no negative available/cashback/frozen, no overdraft beyond its policy
    limit (nor above zero); open holds sum to frozen; open lots sum to available for lot assets;
    no consume refunded beyond what it took.

    Args:
        customers: external_refs to limit the per-account checks to (the global sums are skipped);
            None checks everything.
        store: also append the report to ledger_reconciliation (the periodic job does).
        progress: optional ``progress(done, total)`` called after each check (the CLI's progress bar).

    Returns:
        {"ok", "checked_at", "policy_version", "scope", "totals", "checks": {name: {"ok", "count", "drift"}}}.
    """
    cfg = core.config()
    p = core.param()
    ids = _scope_ids(customers)
    in_ids = f"IN ({core.placeholders(len(ids))})" if ids else ""
    checks = {}

    def check(name, rows, fmt):
        checks[name] = {"ok": not rows, "count": len(rows), "drift": [fmt(r) for r in rows[:MAX_ROWS]]}
        if progress:
            progress(len(checks), CHECKS)

    if ids is None:
        jsum = _rows("SELECT journal_id, asset, SUM(amount_minor) FROM ledger_entry GROUP BY journal_id, asset "
                     "HAVING SUM(amount_minor) <> 0")
        short = _rows("SELECT j.id, COUNT(e.id) FROM ledger_journal j LEFT JOIN ledger_entry e ON e.journal_id = j.id "
                      "GROUP BY j.id HAVING COUNT(e.id) < 2")
    else:
        sub = f"SELECT DISTINCT journal_id FROM ledger_entry WHERE account_id {in_ids}"
        jsum = _rows(f"SELECT journal_id, asset, SUM(amount_minor) FROM ledger_entry WHERE journal_id IN ({sub}) "
                     f"GROUP BY journal_id, asset HAVING SUM(amount_minor) <> 0", ids)
        short = _rows(f"SELECT journal_id, COUNT(*) FROM ledger_entry WHERE journal_id IN ({sub}) "
                      f"GROUP BY journal_id HAVING COUNT(*) < 2", ids)
    check("journal_sums_zero", jsum, lambda r: {"journal_id": r[0], "asset": r[1], "sum": int(r[2])})
    check("journal_has_two_entries", short, lambda r: {"journal_id": r[0], "entries": int(r[1])})

    totals = {}
    if ids is None:
        for asset, snap in _rows("SELECT asset, SUM(balance_minor) FROM ledger_balance GROUP BY asset"):
            totals.setdefault(asset, {})["snapshots"] = int(snap or 0)
        for asset, ent in _rows("SELECT asset, SUM(amount_minor) FROM ledger_entry GROUP BY asset"):
            totals.setdefault(asset, {})["entries"] = int(ent or 0)
        bad = [(a, t.get("snapshots", 0), t.get("entries", 0)) for a, t in sorted(totals.items())
               if t.get("snapshots", 0) != 0 or t.get("entries", 0) != 0]
        check("asset_sums_zero", bad, lambda r: {"asset": r[0], "snapshots": r[1], "entries": r[2]})

    where_b = f"WHERE b.account_id {in_ids}" if ids else ""
    snap = _rows(
        "SELECT b.id, b.account_id, b.sub, b.balance_minor, COALESCE(s.total, 0), s.last_id FROM ledger_balance b "
        "LEFT JOIN (SELECT balance_id, SUM(amount_minor) AS total, MAX(id) AS last_id FROM ledger_entry "
        f"{'WHERE account_id ' + in_ids if ids else ''} GROUP BY balance_id) s ON s.balance_id = b.id "
        f"{where_b}", (ids or []) + (ids or []))
    drift = [r for r in snap if int(r[3]) != int(r[4])]
    check("snapshot_equals_entries", drift, lambda r: {"balance_id": r[0], "account_id": r[1], "sub": r[2],
                                                       "snapshot": int(r[3]), "entries": int(r[4])})
    last_ids = [r[5] for r in snap if r[5] is not None]
    after = {}
    for i in range(0, len(last_ids), 500):
        chunk = last_ids[i:i + 500]
        after.update({bid: int(v) for bid, v in _rows(
            f"SELECT balance_id, balance_after_minor FROM ledger_entry WHERE id IN ({core.placeholders(len(chunk))})",
            chunk)})
    stale = [r for r in snap if r[5] is not None and after.get(r[0]) != int(r[3])]
    check("snapshot_equals_last_balance_after", stale,
          lambda r: {"balance_id": r[0], "snapshot": int(r[3]), "balance_after": after.get(r[0])})

    scope_and = f"AND b.account_id {in_ids}" if ids else ""
    neg = _rows("SELECT b.id, b.account_id, b.sub, b.balance_minor FROM ledger_balance b "
                f"WHERE b.sub IN ('available', 'cashback', 'frozen') AND b.balance_minor < 0 {scope_and}", ids or [])
    for atype in cfg.account_types:
        limit = cfg.overdraft_limit(atype)
        neg += _rows("SELECT b.id, b.account_id, b.sub, b.balance_minor FROM ledger_balance b "
                     "JOIN ledger_account a ON a.id = b.account_id "
                     f"WHERE b.sub = 'overdraft' AND a.type = {p} AND a.is_system = {p} "
                     f"AND (b.balance_minor < {p} OR b.balance_minor > 0) {scope_and}",
                     [atype, False, -limit] + (ids or []))
    check("no_negative_beyond_overdraft", neg, lambda r: {"balance_id": r[0], "account_id": r[1], "sub": r[2],
                                                          "balance": int(r[3])})

    frozen = _rows(
        "SELECT b.account_id, b.balance_minor, COALESCE(h.total, 0) FROM ledger_balance b LEFT JOIN "
        "(SELECT account_id, SUM(remaining_minor) AS total FROM ledger_hold WHERE state = 'held' GROUP BY account_id) h "
        f"ON h.account_id = b.account_id WHERE b.sub = 'frozen' AND b.balance_minor <> COALESCE(h.total, 0) "
        f"{scope_and}", ids or [])
    check("open_holds_equal_frozen", frozen, lambda r: {"account_id": r[0], "frozen": int(r[1]),
                                                        "open_holds": int(r[2])})

    lot_assets = [a for a in cfg.assets if cfg.is_lot_asset(a)]
    lot_rows = []
    if lot_assets:
        lot_rows = _rows(
            "SELECT b.account_id, b.balance_minor, COALESCE(l.total, 0) FROM ledger_balance b JOIN ledger_account a "
            "ON a.id = b.account_id LEFT JOIN (SELECT account_id, SUM(remaining_minor) AS total FROM ledger_lot "
            "WHERE state = 'open' GROUP BY account_id) l ON l.account_id = b.account_id "
            f"WHERE b.sub = 'available' AND a.is_system = {p} AND a.asset IN ({core.placeholders(len(lot_assets))}) "
            f"AND b.balance_minor <> COALESCE(l.total, 0) {scope_and}", [False] + lot_assets + (ids or []))
    check("open_lots_equal_available", lot_rows, lambda r: {"account_id": r[0], "available": int(r[1]),
                                                            "open_lots": int(r[2])})

    over = _rows("SELECT journal_id, amount_minor, refunded_cashback_minor, refunded_available_minor, "
                 "refunded_overdraft_minor FROM ledger_consume WHERE refunded_cashback_minor > cashback_minor "
                 "OR refunded_available_minor > available_minor OR refunded_overdraft_minor > overdraft_minor "
                 f"{'AND account_id ' + in_ids if ids else ''}", ids or [])
    check("refunds_within_consume", over, lambda r: {"consume_id": r[0], "amount": int(r[1])})

    check("lot_refunds_within_spend", lot_operations.over_refunded() if ids is None else [],
          lambda r: r)  # a refund of a recorded lot spend never gives back more than a lot paid

    counts = dict(journals=_rows("SELECT COUNT(*) FROM ledger_journal")[0][0],
                  entries=_rows("SELECT COUNT(*) FROM ledger_entry")[0][0]) if ids is None else {}
    report = {"ok": all(c["ok"] for c in checks.values()), "checked_at": timefmt.iso(clock.now()),
              "policy_version": core.policy_version(), "scope": "all" if ids is None else sorted(customers),
              "totals": {"per_asset": totals, **counts}, "checks": checks}
    if store:
        LedgerReconciliation.create(ok=report["ok"], report=json.dumps(report, separators=(",", ":")))
    return report
