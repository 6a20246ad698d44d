"""Ledger reads: balances from the snapshots, lots, holds, journals and the statement (流水)."""
import datetime as dt

from app.db import db
from app.errors import Problem, validation_failed
from app.models.ledger import LedgerAccount, LedgerCustomer, LedgerEntry, LedgerHold, LedgerJournal, LedgerLot
from app.platform import clock, paging, timefmt
from app.services.ledger import core
from app.services.ledger.core import config


def hold_state(h, now=None):
    """A hold's state at this instant: a withdrawal hold past its ``expires_at`` reads ``expired`` even
    before the minute job has released it (the job only moves the money back; settling is refused)."""
    if h.state == "held" and h.expires_at is not None and h.expires_at <= (now or clock.now()):
        return "expired"
    return h.state


def lot_state(lot, now=None):
    """A lot's state at this instant: past ``expires_at`` an open lot reads ``expired`` (and is neither
    spendable nor counted) before the hourly job has moved its remainder to breakage."""
    if lot.state == "open" and lot.expires_at is not None and lot.expires_at <= (now or clock.now()):
        return "expired"
    return lot.state


def _hold_dict(h):
    return {"id": h.id, "kind": h.kind, "state": hold_state(h), "account_id": h.account_id,
            "amount": h.amount_minor, "remaining": h.remaining_minor, "settled": h.settled_minor,
            "reason": h.reason, "external_ref": h.external_ref, "journal_id": h.journal_id,
            "resolved_journal_id": h.resolved_journal_id, "expires_at": timefmt.iso(h.expires_at),
            "created_at": timefmt.iso(h.created_at), "resolved_at": timefmt.iso(h.resolved_at)}


def _lot_dict(lot, now=None):
    return {"id": lot.id, "asset": lot.asset, "amount": lot.amount_minor, "remaining": lot.remaining_minor,
            "state": lot_state(lot, now), "expires_at": timefmt.iso(lot.expires_at), "created_at": timefmt.iso(lot.created_at),
            "journal_id": lot.journal_id}


def _customer(external_ref):
    cust = LedgerCustomer.get_or_none(LedgerCustomer.external_ref == external_ref)
    if cust is None or cust.kind == "system":
        raise Problem(404, "customer-not-found", "Customer not found", f"customer {external_ref!r} does not exist",
                      customer=external_ref)
    return cust


def balances(customer_external_ref):
    """Balances of every account and sub-account of a customer, read from the snapshots (no SUM of entries).

    Returns:
        {"customer", "kind", "accounts": [{"id", "account_type", "label", "asset", "sub_accounts": {sub: n},
        "overdraft_limit", "spendable", "pending_withdrawal", "debit_blocked", "credit_blocked"}]}.
    """
    cfg = config()
    p = core.param()
    # One round trip: reads are the hot path of every app screen.
    rows = db.execute_sql(
        "SELECT c.external_ref, c.kind, a.id, a.type, a.label, a.asset, a.debit_blocked, a.credit_blocked, "
        "b.sub, b.balance_minor, (SELECT COALESCE(SUM(h.remaining_minor), 0) FROM ledger_hold h "
        "WHERE h.account_id = a.id AND h.state = 'held' AND h.kind = 'withdraw') "
        "FROM ledger_customer c JOIN ledger_account a ON a.customer_id = c.id "
        f"JOIN ledger_balance b ON b.account_id = a.id WHERE c.external_ref = {p} AND c.kind <> 'system' "
        "ORDER BY a.id, b.id", [customer_external_ref]).fetchall()
    if not rows:
        cust = _customer(customer_external_ref)  # 404 unless it exists (without accounts)
        return {"customer": cust.external_ref, "kind": cust.kind, "accounts": []}
    accounts = {}
    for cref, kind, aid, atype, label, asset, dblk, cblk, sub, bal, pending in rows:
        a = accounts.get(aid)
        if a is None:
            a = accounts[aid] = {
                "id": aid, "account_type": atype, "label": label, "asset": asset, "sub_accounts": {},
                "overdraft_limit": cfg.overdraft_limit(atype), "pending_withdrawal": int(pending or 0),
                "debit_blocked": bool(dblk), "credit_blocked": bool(cblk)}
        a["sub_accounts"][sub] = int(bal)
    for a in accounts.values():
        s_ = a["sub_accounts"]
        a["spendable"] = (s_.get("cashback", 0) + s_.get("available", 0)
                          + (a["overdraft_limit"] + s_["overdraft"] if "overdraft" in s_ else 0))
    lot_accounts = [aid for aid, a in accounts.items() if cfg.is_lot_asset(a["asset"])]
    if lot_accounts:
        # spendable = what spend_lot would take now: unexpired lots only, by the clock at this read
        live = dict(db.execute_sql(
            "SELECT account_id, COALESCE(SUM(remaining_minor), 0) FROM ledger_lot "
            f"WHERE account_id IN ({core.placeholders(len(lot_accounts))}) AND state = 'open' "
            f"AND (expires_at IS NULL OR expires_at > {p}) GROUP BY account_id",
            [*lot_accounts, clock.now()]).fetchall())
        for aid in lot_accounts:
            a = accounts[aid]
            a["spendable"] = max(0, min(a["spendable"], int(live.get(aid, 0))))
    return {"customer": rows[0][0], "kind": rows[0][1], "accounts": list(accounts.values())}


def lots(customer_external_ref, asset=None, include_closed=False):
    """Open lots of a customer (optionally one asset), earliest-expiring first, with expires_at.

    A lot past its expiry is not open, whether or not the expiry job has run yet.
    """
    cust = _customer(customer_external_ref)
    now = clock.now()
    q = LedgerLot.select().where(LedgerLot.customer == cust.id)
    if asset:
        q = q.where(LedgerLot.asset == asset)
    if not include_closed:
        q = q.where((LedgerLot.state == "open") & (LedgerLot.expires_at.is_null() | (LedgerLot.expires_at > now)))
    rows = sorted(q, key=lambda lot: (lot.expires_at is None, lot.expires_at or dt.datetime.min, lot.id))
    return [_lot_dict(lot, now) for lot in rows]


def holds(customer_external_ref, state=None):
    """Holds (withdrawals and risk freezes) of a customer, newest first."""
    cust = _customer(customer_external_ref)
    q = LedgerHold.select().where(LedgerHold.customer == cust.id)
    if state:
        q = q.where(LedgerHold.state == state)
    return [_hold_dict(h) for h in q.order_by(LedgerHold.id.desc())]


def hold(hold_id):
    h = LedgerHold.get_or_none(LedgerHold.id == hold_id)
    if h is None:
        raise Problem(404, "hold-not-found", "Hold not found", f"hold {hold_id} does not exist")
    return _hold_dict(h)


def journal(journal_id):
    """One journal with its entries (404 if absent)."""
    return core.journal_dict(journal_id)


def statement(customer=None, account_id=None, type=None, since=None, until=None, cursor=None, limit=50):
    """Entries (流水) newest first, filtered by customer/account/journal type/time, cursor-paginated.

    Args:
        customer: customer external_ref.
        account_id: one account.
        type: journal type (recharge, consume, refund, ...).
        since, until: ISO 8601 bounds on the entry time (since inclusive, until exclusive).
        cursor: ``next_cursor`` of the previous page.
        limit: 1..500.

    Returns:
        {"items": [...], "next_cursor": str | None}.
    """
    if customer is None and account_id is None:
        raise validation_failed([{"pointer": "/query/customer", "validator": "required",
                                  "message": "give customer or account"}])
    q = (LedgerEntry.select(LedgerEntry, LedgerJournal.type.alias("journal_type"), LedgerJournal.external_ref,
                            LedgerAccount.type.alias("account_type"), LedgerAccount.label)
         .join(LedgerJournal, on=(LedgerEntry.journal == LedgerJournal.id))
         .switch(LedgerEntry).join(LedgerAccount, on=(LedgerEntry.account == LedgerAccount.id)))
    if customer is not None:
        q = q.where(LedgerEntry.customer == _customer(customer).id)
    if account_id is not None:
        q = q.where(LedgerEntry.account == account_id)
    if type:
        q = q.where(LedgerJournal.type == type)
    if since:
        q = q.where(LedgerEntry.created_at >= timefmt.parse(since, "/since"))
    if until:
        q = q.where(LedgerEntry.created_at < timefmt.parse(until, "/until"))
    if cursor and not str(cursor).isdigit():
        raise validation_failed([{"pointer": "/query/cursor", "validator": "format",
                                  "message": "not a cursor from this API"}])
    rows, nxt = paging.keyset(q.dicts(), LedgerEntry.id, int(cursor) if cursor else None, limit)
    items = [{"entry_id": e["id"], "journal_id": e["journal"], "journal_type": e["journal_type"],
              "external_ref": e["external_ref"], "account_id": e["account"], "account_type": e["account_type"],
              "label": e["label"], "sub": e["sub"], "asset": e["asset"], "amount": e["amount_minor"],
              "balance_after": e["balance_after_minor"], "created_at": timefmt.iso(e["created_at"])}
             for e in rows]
    return {"items": items, "next_cursor": None if nxt is None else str(nxt)}
