"""Factories and checks shared by the ledger tests (unique data per test: the database is shared)."""
import secrets

from app.errors import Problem


def ref(prefix="cust"):
    return f"{prefix}-{secrets.token_hex(5)}"


def new_customer(prefix="u", kind="user", cash=0, cashback=0):
    """A fresh customer with optional cash (recharge) and cashback (settlement in)."""
    from app.services import ledger
    cref = ref(prefix)
    ledger.ensure_customer(cref, kind)
    if cash:
        ledger.apply_operation("recharge", {"customer": cref, "amount": cash}, "test")
    if cashback:
        ledger.apply_operation("settlement", {"customer": cref, "amount": cashback, "direction": "in",
                                              "sub": "cashback", "bill_ref": ref("cb")}, "test")
    return cref


def subs(cref, account_type="cash", label="default"):
    from app.services import ledger
    for a in ledger.balances(cref)["accounts"]:
        if a["account_type"] == account_type and a["label"] == label:
            return a["sub_accounts"]
    raise AssertionError(f"{cref} has no {account_type}/{label}")


def problem(fn, *args, **kwargs):
    """The Problem raised by fn (fails the test if none is)."""
    try:
        fn(*args, **kwargs)
    except Problem as exc:
        return exc
    raise AssertionError("expected a Problem")


def assert_reconciled(customers=None):
    from app.services import ledger
    report = ledger.reconcile(customers=customers)
    bad = {k: v for k, v in report["checks"].items() if not v["ok"]}
    assert report["ok"], bad
    return report
