"""The tickets context's only door to the ledger: compensation paid to a user as a lot (red packets, vouchers)."""
from app.services import ledger

CLIENT = "tickets"


def compensate(user_id, asset, amount, expires_at, external_ref, key):
    """Grant ``amount`` of a lot asset to the user, exactly once per ``key``; returns (journal_id, lot_id).

    Args:
        user_id: the user (ledger customer external ref; opened if new).
        asset: a lot asset of the ledger policy (RED_PACKET, VOUCHER ...).
        amount: minor units.
        expires_at: RFC 3339 text or None.
        external_ref: the ticket reference recorded on the journal.
        key: the idempotency key (one per ticket and trigger).
    """
    ledger.ensure_customer(user_id)
    body = {"customer": user_id, "asset": asset, "amount": amount, "external_ref": external_ref}
    if expires_at:
        body["expires_at"] = expires_at
    result = ledger.apply_operation("grant_lot", body, actor="system:tickets", idempotency_key=key, client=CLIENT)
    return (result.get("journal") or {}).get("id"), (result.get("lot") or {}).get("id")
