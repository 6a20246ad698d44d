"""The membership context's only door to the ledger: points lots, voucher lots, plan fees (settlement)."""
from app.errors import Problem
from app.platform import clock
from app.services import ledger
from app.platform import timefmt
from app.platform.timefmt import iso

CLIENT = "membership"



def _journal_id(result):
    journal = result.get("journal") or {}
    return str(journal.get("id")) if journal.get("id") is not None else None


def _op(op, body, actor, key):
    """Apply a ledger operation; open the member's ledger customer on first use (not on every call)."""
    try:
        return ledger.apply_operation(op, body, actor, idempotency_key=key, client=CLIENT)
    except Problem as exc:
        if exc.status != 404:
            raise
    ensure(body["customer"])
    return ledger.apply_operation(op, body, actor, idempotency_key=key, client=CLIENT)


def _lots(member_ref, asset):
    try:
        return ledger.lots(member_ref, asset)
    except Problem as exc:
        if exc.status == 404:  # no ledger customer yet: no lots
            return []
        raise


def ensure(member_ref):
    ledger.ensure_customer(member_ref, kind="user")


def grant_points(cfg, member_ref, points, expires_at, key, actor, memo):
    """Grant a points lot expiring at ``expires_at``; returns the journal id."""
    body = {"customer": member_ref, "asset": cfg.points_asset, "amount": points, "external_ref": key,
            "metadata": {"memo": memo, "context": "membership"}}
    if expires_at is not None:
        body["expires_at"] = iso(expires_at)
    return _journal_id(_op("grant_lot", body, actor, key))


def spend_points(cfg, member_ref, points, key, actor, memo):
    """Spend points earliest-expiring first; the ledger raises insufficient-funds if short."""
    body = {"customer": member_ref, "asset": cfg.points_asset, "amount": points, "external_ref": key,
            "metadata": {"memo": memo, "context": "membership"}}
    return _journal_id(_op("spend_lot", body, actor, key))


def points_balance(cfg, member_ref):
    """Spendable points: open lots not yet expired (by the controllable clock, which decides spends)."""
    now = clock.now()
    return int(sum(lot["remaining"] or 0 for lot in points_lots(cfg, member_ref)
                   if not lot["expires_at"] or timefmt.parse(lot["expires_at"], "/expires_at") > now))


def points_lots(cfg, member_ref):
    """Open points lots [{amount, remaining, expires_at}] sorted by expiry."""
    return [{"lot_id": lot["id"], "amount": lot["amount"], "remaining": lot["remaining"],
             "expires_at": lot["expires_at"]} for lot in _lots(member_ref, cfg.points_asset)]


def grant_voucher(member_ref, amount_fen, expires_at, key, actor, memo):
    body = {"customer": member_ref, "asset": "VOUCHER", "amount": amount_fen, "external_ref": key,
            "metadata": {"memo": memo, "context": "membership"}, "expires_at": iso(expires_at)}
    return _journal_id(_op("grant_lot", body, actor, key))


def vouchers(member_ref):
    return [{"lot_id": lot["id"], "amount": lot["amount"], "remaining": lot["remaining"],
             "expires_at": lot["expires_at"]} for lot in _lots(member_ref, "VOUCHER")]


def charge_plan(member_ref, amount_fen, key, actor, memo):
    """Take a plan fee from the member's cash account (ledger settlement, out); returns the journal id."""
    body = {"customer": member_ref, "direction": "out", "amount": amount_fen, "bill_ref": key,
            "metadata": {"memo": memo, "context": "membership"}}
    return _journal_id(_op("settlement", body, actor, key))


def credit_cashback(member_ref, amount_fen, key, actor, memo):
    """Cashback into the member's cash.cashback sub-account (settlement in, from marketing expense)."""
    body = {"customer": member_ref, "direction": "in", "sub": "cashback", "amount": amount_fen, "bill_ref": key,
            "metadata": {"memo": memo, "context": "membership"}}
    return _journal_id(_op("settlement", body, actor, key))


def debit_cashback(member_ref, amount_fen, key, actor, memo):
    """Take cashback back (refund); the ledger refuses more than the cashback sub-account holds."""
    body = {"customer": member_ref, "direction": "out", "sub": "cashback", "amount": amount_fen, "bill_ref": key,
            "metadata": {"memo": memo, "context": "membership"}}
    return _journal_id(_op("settlement", body, actor, key))


# ---- the closed loop: mall issues, checkout spends, refunds along the original route ------------

def grant_lot(member_ref, asset, amount, expires_at, key, actor, memo):
    """Grant a lot (VOUCHER, RED_PACKET, points ...); returns (journal id, lot id)."""
    body = {"customer": member_ref, "asset": asset, "amount": amount, "external_ref": key,
            "metadata": {"memo": memo, "context": "membership"}}
    if expires_at is not None:
        body["expires_at"] = iso(expires_at)
    out = _op("grant_lot", body, actor, key)
    return _journal_id(out), out["lot"]["id"]


def spend_lots(member_ref, asset, amount, key, actor, memo, lot_ids=None):
    """A recorded lot spend (refundable to the same lots); returns (journal id, lots used)."""
    body = {"customer": member_ref, "asset": asset, "amount": amount, "external_ref": key,
            "metadata": {"memo": memo, "context": "membership"}}
    if lot_ids:
        body["lot_ids"] = list(lot_ids)
    out = _op("spend_lots", body, actor, key)
    return _journal_id(out), out["lots_used"]


def refund_lot_spend(member_ref, journal_id, amount, key, actor, memo, expired_until=None):
    """Give back part of a recorded lot spend to the lots that paid it; returns the ledger's lot_refund part."""
    body = {"spend_journal_id": int(journal_id), "amount": amount, "external_ref": key,
            "metadata": {"memo": memo, "context": "membership", "member": member_ref}}
    if expired_until is not None:
        body["expired_until"] = iso(expired_until)
    out = ledger.apply_operation("refund_lot_spend", body, actor, idempotency_key=key, client=CLIENT)
    return dict(out["lot_refund"], journal=_journal_id(out))


def pay_cash(member_ref, amount_fen, key, actor, memo):
    """Pay from the member's cash account (ledger consume: cashback, available, overdraft); returns the consume."""
    body = {"customer": member_ref, "amount": amount_fen, "external_ref": key,
            "metadata": {"memo": memo, "context": "membership"}}
    return _op("consume", body, actor, key)["consume"]


def refund_cash(consume_id, amount_fen, key, actor, memo):
    """Refund part of a consume along its route (overdraft, available, cashback); returns the ledger's refund part."""
    body = {"consume_id": int(consume_id), "amount": amount_fen, "external_ref": key,
            "metadata": {"memo": memo, "context": "membership"}}
    out = ledger.apply_operation("refund", body, actor, idempotency_key=key, client=CLIENT)
    return dict(out["refund"], journal=_journal_id(out))


def lots_of(member_ref, asset):
    """Open lots of an asset [{lot_id, amount, remaining, expires_at}], earliest expiry first."""
    return [{"lot_id": lot["id"], "amount": lot["amount"], "remaining": lot["remaining"],
             "expires_at": lot["expires_at"]} for lot in _lots(member_ref, asset)]
