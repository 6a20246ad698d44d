"""Lots (points, red packets, vouchers): grants with expiry, spends that drain lots, refunds back into the lots that
paid, expiry to breakage. One way lots pay (``_drain``), whichever lots the spend names."""
from app.db import db, for_update
from app.errors import Problem
from app.models.ledger import LedgerAccount, LedgerEntry, LedgerLot, LedgerLotUse
from app.platform import timefmt
from app.services.ledger import core
from app.services.ledger.core import Leg, config, insufficient, post, system
from app.services.ledger.reads import _lot_dict

iso = timefmt.iso


def _lot_asset(body):
    """(compiled policy, asset) of a lot operation; 422 when the asset is not held in lots."""
    cfg = config()
    asset = body["asset"]
    if not cfg.is_lot_asset(asset):
        raise Problem(422, "not-a-lot-asset", "Not a lot asset", f"{asset} is not held in lots")
    return cfg, asset


def op_grant_lot(ctx, body):
    cfg, asset = _lot_asset(body)
    expires_at = timefmt.parse(body.get("expires_at"), "/expires_at")
    (acct,) = core.lock_accounts([core.customer_account_for_asset(body["customer"], asset)])
    src = cfg.system_code(body.get("source") or cfg.lot_route(asset, "issue_from"), asset)
    j = post(ctx, "lot_grant", [Leg(system(src, asset), "main", -body["amount"]),
                                Leg(acct, "available", body["amount"])], rule=f"routes.lots.{asset}.issue_from")
    lot = LedgerLot.create(account=acct.id, customer=acct.customer_id, asset=asset, amount_minor=body["amount"],
                           remaining_minor=body["amount"], expires_at=expires_at, journal=j["id"],
                           created_at=ctx.now())
    return {"journal": j, "lot": _lot_dict(lot)}


def _spend_account(body):
    """(compiled policy, asset, the customer's lot account read unlocked): lots are locked before it."""
    cfg, asset = _lot_asset(body)
    (pre,) = core.read_accounts([core.customer_account_for_asset(body["customer"], asset)])
    return cfg, asset, pre


def _drain(ctx, body, cfg, asset, acct, lots, how):
    """Spend ``body["amount"]`` from ``lots`` (locked, spendable, in the order they pay): one journal to the
    asset's spend route (or ``to``), each lot drained in turn. Returns (journal, lots used)."""
    amount = body["amount"]
    spendable = min(sum(lot.remaining_minor for lot in lots), acct.balance("available"))
    if amount > spendable:
        raise insufficient(amount, spendable, acct.name())
    dst = cfg.system_code(body.get("to") or cfg.lot_route(asset, "spend_to"), asset)
    j = post(ctx, "lot_spend", [Leg(acct, "available", -amount), Leg(system(dst, asset), "main", amount)],
             rule=f"routes.lots.{asset}.spend_to; {how}")
    used, left = [], amount
    for lot in lots:
        if left == 0:
            break
        take = min(left, lot.remaining_minor)
        if take == 0:
            continue
        left -= take
        lot.remaining_minor -= take
        lot.state = "spent" if lot.remaining_minor == 0 else "open"
        LedgerLot.update(remaining_minor=lot.remaining_minor, state=lot.state).where(LedgerLot.id == lot.id).execute()
        used.append({"lot_id": lot.id, "amount": take, "expires_at": iso(lot.expires_at)})
    return j, used


def op_spend_lot(ctx, body):
    """Drain open lots earliest-expiring first (lots never expiring last); expired lots are not spendable."""
    cfg, asset, pre = _spend_account(body)
    # Lock order: lots (by id) before balance rows, the same in every lot operation.
    lots = list(for_update(LedgerLot.select().where((LedgerLot.account == pre.id) & (LedgerLot.state == "open"))
                           .order_by(LedgerLot.id)))
    (acct,) = core.lock_accounts(account_ids=[pre.id])
    now = ctx.now()
    live = sorted((lot for lot in lots if lot.expires_at is None or lot.expires_at > now),
                  key=lambda lot: (lot.expires_at is None, lot.expires_at or now, lot.id))
    j, used = _drain(ctx, body, cfg, asset, acct, live, "earliest expiry first")
    return {"journal": j, "lots_used": used}


def _record(journal_id, used):
    for seq, u in enumerate(used):
        LedgerLotUse.create(journal=journal_id, lot=u["lot_id"], seq=seq, amount_minor=u["amount"])


def op_spend_lots(ctx, body):
    """Spend a lot asset and record which lots paid, so that the spend can be refunded to them.

    Without ``lot_ids`` the lots are drained as ``spend_lot`` drains them (earliest expiry first); with
    ``lot_ids`` exactly those lots pay, in the order given (a voucher is one lot, used by its id).
    """
    if not body.get("lot_ids"):
        out = op_spend_lot(ctx, body)
        _record(out["journal"]["id"], out["lots_used"])
        return out
    cfg, asset, pre = _spend_account(body)
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
    chosen = [rows[lid] for lid in dict.fromkeys(wanted)]  # each lot once, in the order given
    j, used = _drain(ctx, body, cfg, asset, acct, chosen, "lots chosen by the caller")
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


def op_expire_lot(ctx, body):
    """Move an expired lot's remainder to breakage (run by the expiry job)."""
    cfg = config()
    lot = for_update(LedgerLot.select().where(LedgerLot.id == body["lot_id"])).first()
    if lot is None:
        raise Problem(404, "lot-not-found", "Lot not found", f"lot {body['lot_id']} does not exist")
    if lot.state != "open" or lot.remaining_minor == 0:
        raise Problem(409, "lot-not-open", "Lot not open", f"lot {lot.id} is {lot.state}", state=lot.state)
    if lot.expires_at is None or lot.expires_at > ctx.now():
        raise Problem(409, "lot-not-expired", "Lot not expired", f"lot {lot.id} has not expired")
    (acct,) = core.lock_accounts(account_ids=[lot.account_id])
    dst = cfg.system_code(cfg.lot_route(lot.asset, "expire_to"), lot.asset)
    ctx.allow_blocked = True
    j = post(ctx, "lot_expire", [Leg(acct, "available", -lot.remaining_minor),
                                 Leg(system(dst, lot.asset), "main", lot.remaining_minor)],
             rule=f"routes.lots.{lot.asset}.expire_to")
    LedgerLot.update(remaining_minor=0, state="expired").where(LedgerLot.id == lot.id).execute()
    lot.state, lot.remaining_minor = "expired", 0
    return {"journal": j, "lot": _lot_dict(lot)}


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


OPERATIONS = {"grant_lot": op_grant_lot, "spend_lot": op_spend_lot, "spend_lots": op_spend_lots,
              "refund_lot_spend": op_refund_lot_spend}
INTERNAL_OPERATIONS = {"expire_lot": op_expire_lot}
