"""Accounts ledger: the public interface. Operations exactly once (``operations``), reads (``reads``),
reconciliation (``reconcile``); the mechanics (policy, locking, posting) live in ``core``."""
import datetime as dt

from app.models.ledger import LedgerJournal
from app.platform import clock, timefmt
from app.policy import kinds
from app.services.ledger import core
from app.services.ledger.operations import (INTERNAL_OPERATIONS, MAX_BATCH, OPERATIONS, apply_batch,
                                            apply_operation, ensure_customer, execute, open_account,
                                            retry_counts, status_of, transactional)
from app.services.ledger.reads import balances, hold, holds, journal, lots, statement
from app.services.ledger.reconcile import reconcile

__all__ = ["INTERNAL_OPERATIONS", "MAX_BATCH", "OPERATIONS", "apply_batch", "apply_operation", "balances",
           "ensure_customer", "execute", "hold", "holds", "journal", "lots", "open_account", "reconcile",
           "register", "retry_counts", "seed_demo", "statement", "status_of", "transactional"]


def register():
    """The ledger's policy kind (``ledger``, formerly ``assets``) and its cross-check; called once by app.contexts."""
    kinds.register("ledger", cross_check=core.cross_check_set, formerly=("assets",))
    kinds.require("ledger")
    from app.platform import auth
    auth.declare_permissions(PERMISSIONS)


# Staff permissions ledger routes check (a person freezing or blocking through a session or act-as).
PERMISSIONS = {"ledger.freeze": "freeze/unfreeze funds and block/unblock accounts"}
FREEZE_OPS = ("freeze", "unfreeze", "block", "unblock")


def seed_demo():
    """A demo user with a cash balance, some cashback and points (idempotent by keys)."""
    ensure_customer("demo-user", "user")
    ensure_customer("demo-merchant", "merchant")
    expires = timefmt.iso((clock.now() + dt.timedelta(days=365)).replace(microsecond=0))
    steps = [
        ("recharge", {"customer": "demo-user", "amount": 100000, "external_ref": "demo-recharge-1"}),
        ("settlement", {"customer": "demo-user", "direction": "in", "sub": "cashback", "amount": 1500,
                        "bill_ref": "demo-cashback-1"}),
        ("grant_lot", {"customer": "demo-user", "asset": "POINTS", "amount": 500, "expires_at": expires,
                       "external_ref": "demo-points-1"}),
    ]
    for i, (op, body) in enumerate(steps):
        if LedgerJournal.get_or_none((LedgerJournal.client == "demo") & (LedgerJournal.idempotency_key == f"seed-{i}")):
            continue
        apply_operation(op, body, "system", idempotency_key=f"seed-{i}", client="demo")
