"""Factories and checks shared by the ledger tests (unique data per test: the database is shared)."""
import secrets
from contextlib import contextmanager

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


# Where a posting writes each part; a simulated crash fires right after the first statement touching it.
_CRASH_TABLES = {"after-journal": "ledger_journal", "after-balances": "ledger_balance", "after-entries": "ledger_entry"}


@contextmanager
def crash_at(step, exc=ConnectionError):
    """Simulate the process dying at ``step`` of the next posting (test-side: wraps the database, not the ledger).

    Steps: ``after-journal``/``after-balances``/``after-entries`` raise just after the first statement that
    writes that table (on PostgreSQL a posting may write all three in one statement); ``before-commit``
    raises instead of the next COMMIT. The exception fires once, then the database behaves normally.
    """
    from app.db import db
    database = db.obj
    armed = [True]
    table = _CRASH_TABLES.get(step)
    if table is None and step != "before-commit":
        raise ValueError(f"unknown crash step {step!r}")
    real_execute, real_commit = database.execute_sql, database.commit

    def execute_sql(sql, params=None, *args, **kwargs):
        cursor = real_execute(sql, params, *args, **kwargs)
        text = " ".join(str(sql).split()).lower()
        if armed[0] and table and (f"into {table} " in text or f"into {table}(" in text
                                   or f"update {table} " in text or f'"{table}"' in text
                                   and not text.startswith("select")):
            armed[0] = False
            raise exc(f"process died {step}")
        return cursor

    def commit():
        if armed[0] and step == "before-commit":
            armed[0] = False
            raise exc(f"process died {step}")
        return real_commit()

    database.execute_sql, database.commit = execute_sql, commit
    try:
        yield
    finally:
        del database.execute_sql, database.commit  # back to the class's methods
    assert not armed[0], f"the posting never reached {step}"
