"""Many writers on PostgreSQL (16 threads): no lost update, no overdraft, no double refund/settle, one journal per key."""
import threading
from collections import Counter

import pytest

from app.errors import Problem
from tests.conftest import BACKEND
from tests.ledger_factories import assert_reconciled, new_customer, ref, subs

pytestmark = [
    pytest.mark.postgres_only,
    pytest.mark.skipif(BACKEND != "postgres", reason="concurrency of many writers needs PostgreSQL "
                                                     "(SQLite has a single writer by design)"),
]

THREADS = 16


def hammer(app, fn, per_thread=1):
    """Run fn(thread_index, i) from THREADS threads at once; returns Counter of outcomes."""
    from app.db import db
    outcomes, errors = Counter(), []
    lock = threading.Lock()
    start = threading.Barrier(THREADS)

    def worker(t):
        with app.app_context(), db.connection_context():
            start.wait()
            for i in range(per_thread):
                try:
                    result = fn(t, i)
                    outcome = ("ok", result)
                except Problem as exc:
                    outcome = ("problem", exc.code)
                except Exception as exc:  # noqa: BLE001 - anything else is a failure of the test
                    with lock:
                        errors.append(repr(exc))
                    continue
                with lock:
                    outcomes[outcome if outcome[0] == "problem" else "ok"] += 1

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
    return outcomes


@pytest.fixture()
def ledger(db_conn):
    from app.services import ledger as svc
    return svc


def test_concurrent_consumes_never_overdraw_nor_lose_updates(app, ledger):
    cref = new_customer(cash=10000, cashback=1000)  # spendable 16,000 with the 5,000 overdraft
    out = hammer(app, lambda t, i: ledger.apply_operation("consume", {"customer": cref, "amount": 100}, "race"),
                 per_thread=12)  # 192 attempts x 100 = 19,200 > 16,000
    assert out["ok"] == 160
    assert out[("problem", "insufficient-funds")] == 32
    assert subs(cref) == {"available": 0, "cashback": 0, "frozen": 0, "overdraft": -5000}
    assert_reconciled([cref])


def test_concurrent_refunds_of_one_consume_cannot_over_refund(app, ledger):
    cref = new_customer(cash=1600)
    cid = ledger.apply_operation("consume", {"customer": cref, "amount": 1600}, "race")["consume"]["journal_id"]
    out = hammer(app, lambda t, i: ledger.apply_operation("refund", {"consume_id": cid, "amount": 100}, "race"),
                 per_thread=2)
    assert out["ok"] == 16 and out[("problem", "refund-exceeds-remaining")] == 16
    assert subs(cref)["available"] == 1600
    assert_reconciled([cref])


def test_concurrent_settle_and_release_of_one_hold_resolve_once(app, ledger):
    cref = new_customer(cash=1000)
    hold = ledger.apply_operation("withdraw", {"customer": cref, "amount": 800}, "race")["hold"]["id"]
    out = hammer(app, lambda t, i: ledger.apply_operation(
        "settle_hold" if t % 2 else "release_hold", {"hold_id": hold}, "race"))
    assert out["ok"] == 1 and out[("problem", "hold-not-held")] == 15
    s = subs(cref)
    assert s["frozen"] == 0 and s["available"] in (200, 1000)
    assert_reconciled([cref])


def test_racing_requests_with_one_key_make_one_journal(app, ledger):
    from app.models.ledger import LedgerJournal
    cref = new_customer()
    key = ref("race")
    results = []
    out = hammer(app, lambda t, i: results.append(ledger.apply_operation(
        "recharge", {"customer": cref, "amount": 500}, "race", idempotency_key=key, client="racer")))
    assert out["ok"] == 16
    assert len({r["journal"]["id"] for r in results}) == 1
    assert LedgerJournal.select().where((LedgerJournal.client == "racer")
                                        & (LedgerJournal.idempotency_key == key)).count() == 1
    assert subs(cref)["available"] == 500


def test_crossing_transfers_and_hot_account_do_not_deadlock_or_lose_money(app, ledger):
    users = [new_customer(cash=5000) for _ in range(4)]

    def move(t, i):
        a, b = users[(t + i) % 4], users[(t + i + 1 + t % 2) % 4]  # both directions between pairs
        if i % 3 == 2:  # and postings to the hot platform account in between
            return ledger.apply_operation("consume", {"customer": a, "amount": 7}, "race")
        return ledger.apply_operation("transfer", {"from": {"customer": a}, "to": {"customer": b}, "amount": 13},
                                      "race")
    out = hammer(app, move, per_thread=15)
    assert out["ok"] + out[("problem", "insufficient-funds")] == THREADS * 15
    consumed = 7 * sum(1 for t in range(THREADS) for i in range(15) if i % 3 == 2)
    total = sum(sum(subs(u).values()) for u in users)
    assert total == 4 * 5000 - consumed
    assert_reconciled(users)
    assert_reconciled()


def test_concurrent_batches_over_the_same_accounts_in_any_order_do_not_deadlock(app, ledger):
    users = [new_customer(cash=100000) for _ in range(4)]

    def batch(t, i):
        order = users if t % 2 else list(reversed(users))
        items = [{"op": "transfer", "body": {"from": {"customer": a}, "to": {"customer": b}, "amount": 1 + t}}
                 for a, b in zip(order, order[1:] + order[:1])]
        items += [{"op": "consume", "body": {"customer": order[t % 4], "amount": 5}}]
        out = ledger.apply_batch(items, "race", batch_key=ref("b"))
        assert out["failed"] == 0, out
        return out
    out = hammer(app, batch, per_thread=3)
    assert out["ok"] == THREADS * 3
    assert sum(sum(subs(u).values()) for u in users) == 4 * 100000 - 5 * THREADS * 3
    assert_reconciled(users)
