"""Many writers on PostgreSQL (16 threads): no lost update, no overdraft, no double refund/settle, one journal per key."""
import threading
import time
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


def _run_threads(app, n, fn):
    """Run fn(thread_index) from n threads released together; returns the errors raised."""
    from app.db import db
    errors, lock, start = [], threading.Lock(), threading.Barrier(n)

    def worker(t):
        with app.app_context(), db.connection_context():
            start.wait()
            try:
                fn(t)
            except Exception as exc:  # noqa: BLE001 - any error fails the test
                with lock:
                    errors.append(repr(exc))

    threads = [threading.Thread(target=worker, args=(t,), daemon=True) for t in range(n)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 300  # generous for a loaded machine; a hang still fails
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    # checking the results while a thread still writes would test nothing (or fail for the wrong reason)
    assert not any(t.is_alive() for t in threads), f"threads still running after 300 s; errors so far: {errors[:3]}"
    return errors


def test_transactions_of_several_postings_over_shared_system_accounts_never_deadlock(app, ledger):
    # Each transaction makes 3 postings to 3 of 4 customers (taken in one order, as membership takes its
    # members), all against the same system accounts (bank clearing, platform revenue, points issuance).
    # A system shard held from posting 1 to commit while posting 2 waits for customer rows used to deadlock.
    import random
    users = [new_customer(cash=100000) for _ in range(4)]
    before = ledger.retry_counts()
    per_thread = 20

    def body(t):
        rnd = random.Random(t)
        for i in range(per_thread):
            picks = sorted(rnd.sample(range(len(users)), 3))

            @ledger.transactional()
            def run():
                for k, u in enumerate(picks):
                    op = ("recharge", "consume", "grant_lot")[(t + i + k) % 3]
                    body = {"customer": users[u], "amount": 3}
                    if op == "grant_lot":
                        body["asset"] = "POINTS"
                    ledger.apply_operation(op, body, "race", idempotency_key=ref("k"), client="multi")
            run()

    errors = _run_threads(app, 8, body)
    assert not errors, errors[:3]
    after = ledger.retry_counts()
    assert {k: after.get(k, 0) - before.get(k, 0) for k in after} == {k: 0 for k in after}
    assert_reconciled(users)
    assert_reconciled()


def test_first_postings_on_a_fresh_database_all_succeed(app):
    # System accounts are created on first use; 16 first postings racing on a new database used to
    # cache shard ids of a transaction that then rolled back (KeyError / 500 on the next posting).
    import secrets
    from urllib.parse import quote

    import psycopg2

    from app.db import db, open_database
    from app.migrations import upgrade
    from app.services import ledger
    from app.services.ledger import core as ledger_core
    from tests.conftest import PG_URL

    schema = f"patron_fresh_{secrets.token_hex(4)}"
    conn = psycopg2.connect(PG_URL)
    conn.autocommit = True
    conn.cursor().execute(f'CREATE SCHEMA "{schema}"')
    previous = db.obj
    sep = "&" if "?" in PG_URL else "?"
    fresh = None
    try:
        fresh = open_database(f"{PG_URL}{sep}options={quote('-c search_path=' + schema)}")
        upgrade()
        with db.connection_context():
            users = [f"fresh-{t}" for t in range(16)]
            for u in users:
                ledger.ensure_customer(u)

        ops = [("recharge", {"amount": 1000}), ("grant_lot", {"asset": "POINTS", "amount": 5}),
               ("settlement", {"direction": "in", "sub": "cashback", "amount": 300, "bill_ref": "cb"}),
               ("grant_lot", {"asset": "VOUCHER", "amount": 7})]

        def first(t):  # each thread needs the system accounts in another order
            for op, body in ops[t % 4:] + ops[:t % 4]:
                ledger.apply_operation(op, {"customer": users[t], **body}, "race")
            ledger.apply_operation("consume", {"customer": users[t], "amount": 300}, "race")

        errors = _run_threads(app, 16, first)
        assert not errors, errors[:3]
        with db.connection_context():
            for u in users:
                assert subs(u) == {"available": 1000, "cashback": 0, "frozen": 0, "overdraft": 0}
            assert_reconciled()
    finally:
        db.initialize(previous)
        if fresh is not None:
            fresh.close_all()
        ledger_core.clear_caches()
        conn.cursor().execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        conn.close()


def test_concurrent_membership_batches_commit_many_events_without_deadlocks(app):
    # Membership's batch commits 25 events per transaction, each granting points (a ledger posting on
    # the points issuance account): concurrent batches over overlapping members must not deadlock.
    # Only deadlocks count: on a loaded machine a batch may wait past PostgreSQL's lock_timeout (10 s) or
    # SQLite's busy timeout behind the others and be retried, which is waiting, not a lock-order bug
    # (PostgreSQL reports a real deadlock after deadlock_timeout, 1 s, well before the lock timeout).
    import uuid

    from app.db import RETRIES
    from app.services.membership import events as membership_events

    members = [f"mb-{uuid.uuid4().hex[:10]}" for _ in range(10)]
    before = dict(RETRIES)

    def batch(t):
        for i in range(3):  # 3 of the 10 members per batch: batches overlap in part
            events = [{"event_id": f"ev-{uuid.uuid4().hex}", "member_id": members[(t + i + k % 3 * 2) % 10],
                       "type": "order_paid", "amount_fen": 1000 + k, "order_ref": f"o-{uuid.uuid4().hex}"}
                      for k in range(12)]
            results = membership_events.ingest_batch(events, "race")
            bad = [r for r in results if r["status"] != 201]
            assert not bad, bad[:2]

    errors = _run_threads(app, 8, batch)
    assert not errors, errors[:3]
    retried = {k: RETRIES[k] - before.get(k, 0) for k in RETRIES if RETRIES[k] != before.get(k, 0)}
    assert not retried.get("deadlock") and not retried.get("serialization"), retried
    assert_reconciled(members)


def test_a_consume_posts_to_the_shard_it_took_with_the_customer_rows_and_holds_it(app, db_conn, monkeypatch):
    # lock_accounts(shard_of=...) takes a platform shard (SKIP LOCKED) in the statement that locks the
    # customer's rows; the posting uses that shard without a statement of its own, and the shard stays
    # locked until the transaction ends.
    from app.db import db
    from app.models.ledger import LedgerEntry
    from app.services import ledger
    from app.services.ledger import core
    cust = new_customer(cash=100)
    _aid, _cid, shard_ids = core.system_shards("platform_revenue", "CNY")
    picked = []
    real = core._lock_free_shard
    monkeypatch.setattr(core, "_lock_free_shard", lambda ids, hint: picked.append(hint) or real(ids, hint))
    with db.atomic():
        out = ledger.apply_operation("consume", {"customer": cust, "amount": 7}, "t", idempotency_key=ref("k"))
        shard = (LedgerEntry.select(LedgerEntry.balance).where((LedgerEntry.journal == out["journal"]["id"])
                                                               & LedgerEntry.balance.in_(shard_ids)).scalar())
        assert shard is not None and picked == []  # the lock statement's shard, no pick of its own
        assert _lockable_elsewhere(app, shard) is False  # held by this transaction
    assert _lockable_elsewhere(app, shard) is True
    # a posting on accounts locked without shard_of still picks (and locks) a shard itself
    with db.atomic():
        ledger.apply_operation("settlement", {"customer": cust, "amount": 1, "direction": "out",
                                              "counterparty": "platform_revenue"}, "t", idempotency_key=ref("k"))
    assert len(picked) == 1
    assert_reconciled([cust])


def _lockable_elsewhere(app, balance_id):
    """Whether another connection can lock the row now (NOWAIT), from a thread of its own."""
    from app.db import db
    out = []

    def other():
        with app.app_context(), db.connection_context():
            try:
                with db.atomic():
                    db.execute_sql("SELECT id FROM ledger_balance WHERE id = %s FOR NO KEY UPDATE NOWAIT",
                                   [balance_id])
                out.append(True)
            except Exception:  # noqa: BLE001 - lock not available (55P03)
                out.append(False)
    t = threading.Thread(target=other)
    t.start()
    t.join()
    return out[0]
