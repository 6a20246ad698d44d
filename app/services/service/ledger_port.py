"""The service context's only door to the ledger: red packets paid as compensation, and a user's balances."""
from app.services import ledger

CLIENT = "service"


def grant(user_id, asset, amount, expires_at, external_ref, key, actor):
    """Grant ``amount`` of a lot asset to the user, exactly once per ``key``; returns the journal id."""
    ledger.ensure_customer(user_id)
    body = {"customer": user_id, "asset": asset, "amount": amount, "external_ref": external_ref}
    if expires_at:
        body["expires_at"] = expires_at
    result = ledger.apply_operation("grant_lot", body, actor=actor, idempotency_key=key, client=CLIENT)
    return (result.get("journal") or {}).get("id")


def balances(user_id):
    """Every account of the user with its balances (404 problem for a user the ledger does not know)."""
    return ledger.balances(user_id)
