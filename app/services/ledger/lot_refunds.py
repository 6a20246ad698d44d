"""Recorded lot spends (optionally of chosen lots) and their refunds back into the lots that paid, with their expiry."""
from app.db import db, for_update
from app.errors import Problem
from app.models.ledger import LedgerAccount, LedgerEntry, LedgerLot, LedgerLotUse
from app.platform import timefmt
from app.services.ledger import core
from app.services.ledger.core import Leg, config, insufficient, post, system

iso = timefmt.iso


def _record(journal_id, used):
    for seq, u in enumerate(used):
        LedgerLotUse.create(journal=journal_id, lot=u["lot_id"], seq=seq, amount_minor=u["amount"])


def op_spend_lots(ctx, body):
    """Spend a lot asset and record which lots paid, so that the spend can be refunded to them.

    Without ``lot_ids`` the lots are drained as ``spend_lot`` drains them (earliest expiry first); with
    ``lot_ids`` exactly those lots pay, in the order given (a voucher is one lot, used by its id).
    """
    from app.services.ledger.operations import op_spend_lot
    if not body.get("lot_ids"):
        out = op_spend_lot(ctx, body)
        _record(out["journal"]["id"], out["lots_used"])
        return out
    cfg = config()
    asset = body["asset"]
    if not cfg.is_lot_asset(asset):
        raise Problem(422, "not-a-lot-asset", "Not a lot asset", f"{asset} is not held in lots")
    ref = core.customer_account_for_asset(body["customer"], asset)
    (pre,) = core.read_accounts([ref])
    wanted = [int(i) for i in body["lot_ids"]]
    # Lock order as in every lot operation: lots (by id) before balance rows.
    rows = {lot.id: lot for lot in for_update(LedgerLot.select().where(LedgerLot.id.in_(wanted))
                                              .order_by(LedgerLot.id))}
    (acct,) = core.lock_accounts(account_ids=[pre.id])
    now = ctx.now()
    for lid in wanted:
        lot = rows.get(lid)
        if lot is None or lot.account_id != pre.id:
            raise Problem(404, "lot-not-found", "Lot not found", f"lot {lid} is not a {asset} lot of this customer",
                          lot_id=lid)
        if lot.state != "open" or (lot.expires_at is not None and lot.expires_at <= now):
            raise Problem(409, "lot-not-spendable", "Lot not spendable",
                          f"lot {lid} is {'expired' if lot.state == 'open' else lot.state}", lot_id=lid)
    spendable = min(sum(rows[lid].remaining_minor for lid in wanted), acct.balance("available"))
    amount = body["amount"]
    if amount > spendable:
        raise insufficient(amount, spendable, acct.name())
    dst = cfg.system_code(body.get("to") or cfg.lot_route(asset, "spend_to"), asset)
    j = post(ctx, "lot_spend", [Leg(acct, "available", -amount), Leg(system(dst, asset), "main", amount)],
             rule=f"routes.lots.{asset}.spend_to; lots chosen by the caller")
    used, left = [], amount
    for lid in wanted:
        lot = rows[lid]
        if left == 0:
            break
        take = min(left, lot.remaining_minor)
        if take == 0:
            continue
        left -= take
        remaining = lot.remaining_minor - take
        LedgerLot.update(remaining_minor=remaining, state="spent" if remaining == 0 else "open") \
            .where(LedgerLot.id == lid).execute()
        used.append({"lot_id": lid, "amount": take, "expires_at": iso(lot.expires_at)})
    _record(j["id"], used)
    return {"journal": j, "lots_used": used}


def op_refund_lot_spend(ctx, body):
    """Give back (part of) a recorded lot spend to the lots that paid it, last used first.

    A lot still live gets its amount back (same lot, same expiry). A lot already expired (or moved to
    breakage) gets a new lot instead, expiring at ``expired_until`` when the caller's policy grants an
    extension, else at the original expiry (so it is not spendable and the expiry job breaks it).
    The lot uses are the refund counter: never more than was spent, also under concurrent refunds.
    """
    cfg = config()
    sid = body["spend_journal_id"]
    uses = list(for_update(LedgerLotUse.select().where(LedgerLotUse.journal == sid).order_by(LedgerLotUse.seq)))
    if not uses:
        raise Problem(404, "lot-spend-not-found", "Lot spend not found",
                      f"journal {sid} is not a recorded lot spend (spend_lots)")
    remaining = sum(u.amount_minor - u.refunded_minor for u in uses)
    amount = body["amount"]
    if amount > remaining:
        raise Problem(422, "refund-exceeds-remaining", "Refund exceeds remaining",
                      f"refund {amount} > refundable {remaining}", requested=amount, remaining=remaining)
    lots = {lot.id: lot for lot in for_update(LedgerLot.select().where(LedgerLot.id.in_([u.lot_id for u in uses]))
                                              .order_by(LedgerLot.id))}
    acct_id = lots[uses[0].lot_id].account_id
    (acct,) = core.lock_accounts(account_ids=[acct_id])
    asset = acct.asset
    # The spend's counterparty: the system account that received it.
    src = (LedgerAccount.select(LedgerAccount.type).join(LedgerEntry, on=(LedgerEntry.account == LedgerAccount.id))
           .where((LedgerEntry.journal == sid) & (LedgerAccount.is_system == True)).scalar())  # noqa: E712
    now = ctx.now()
    extended = timefmt.parse(body.get("expired_until"), "/expired_until")
    j = post(ctx, "lot_refund", [Leg(system(src, asset), "main", -amount), Leg(acct, "available", amount)],
             rule=f"refund of lot spend {sid}: back to the lots that paid, last used first")
    back, left = [], amount
    for u in reversed(uses):
        if left == 0:
            break
        give = min(left, u.amount_minor - u.refunded_minor)
        if give == 0:
            continue
        left -= give
        lot = lots[u.lot_id]
        live = lot.state != "expired" and (lot.expires_at is None or lot.expires_at > now)
        if live:
            LedgerLot.update(remaining_minor=LedgerLot.remaining_minor + give, state="open") \
                .where(LedgerLot.id == lot.id).execute()
            to, expires, how = lot.id, lot.expires_at, "original lot"
        else:
            expires = extended or lot.expires_at
            new = LedgerLot.create(account=acct.id, customer=acct.customer_id, asset=asset, amount_minor=give,
                                   remaining_minor=give, expires_at=expires, journal=j["id"], created_at=now)
            to, how = new.id, "new lot (original expired)" + (", extended" if extended else "")
        LedgerLotUse.update(refunded_minor=LedgerLotUse.refunded_minor + give).where(LedgerLotUse.id == u.id).execute()
        back.append({"lot_id": to, "from_lot_id": lot.id, "amount": give, "expires_at": iso(expires),
                     "original_expires_at": iso(lot.expires_at), "how": how})
    return {"journal": j, "lot_refund": {"spend_journal_id": sid, "amount": amount, "lots": back,
                                         "refundable_after": remaining - amount}}


def refundable(spend_journal_id):
    """What is left to refund of a recorded lot spend (0 when unknown)."""
    p = core.param()
    row = db.execute_sql(f"SELECT COALESCE(SUM(amount_minor - refunded_minor), 0) FROM ledger_lot_use "
                         f"WHERE journal_id = {p}", (spend_journal_id,)).fetchone()
    return int(row[0] or 0)


def over_refunded():
    """Lot uses refunded beyond what they paid (a reconciliation check; empty when clean)."""
    return [{"lot_use_id": r[0], "journal_id": r[1], "amount": int(r[2]), "refunded": int(r[3])}
            for r in db.execute_sql("SELECT id, journal_id, amount_minor, refunded_minor FROM ledger_lot_use "
                                    "WHERE refunded_minor > amount_minor OR refunded_minor < 0").fetchall()]


OPERATIONS = {"spend_lots": op_spend_lots, "refund_lot_spend": op_refund_lot_spend}
