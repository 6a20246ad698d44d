"""The ledger's operation contract on both engines: every posting writer the engine has gives the same results.

PostgreSQL writes most postings in one statement and the rest (and every SQLite posting) with portable
statements; batches of consumes go through the bulk writer. The same operations must answer the same
JSON (ids aside) and leave the same balances whichever path wrote them.
"""
import pytest

from app.services import ledger
from app.services.ledger import core
from tests.ledger_factories import assert_reconciled, new_customer, ref, subs


def _scrub(value):
    """A result without what legitimately differs between runs (ids, times, customers, keys)."""
    if isinstance(value, dict):
        if value.get("system"):  # a shared system shard: its balance moves with every other test
            value = {k: v for k, v in value.items() if k != "balance_after"}
        return {k: _scrub(v) for k, v in value.items()
                if k not in ("id", "journal_id", "account_id", "created_at", "customer", "consume_id",
                             "idempotency_key", "hold_id", "resolved_journal_id", "expires_at", "lot_id",
                             "resolved_at")}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


def _scenario():
    """Every kind of posting once; returns (scrubbed results, final balances)."""
    cref = new_customer("ct", cash=10000, cashback=300)
    out = []

    def op(name, body):
        result = ledger.apply_operation(name, body, "contract", idempotency_key=ref("k"))
        out.append(_scrub(result))
        return result

    consume = op("consume", {"customer": cref, "amount": 1500, "external_ref": "o-1"})
    op("refund", {"consume_id": consume["consume"]["journal_id"], "amount": 700})
    hold = op("withdraw", {"customer": cref, "amount": 100})["hold"]
    op("settle_hold", {"hold_id": hold["id"], "amount": 60})
    op("consume", {"customer": cref, "amount": 14000})  # into the overdraft
    op("recharge", {"customer": cref, "amount": 20000})
    op("grant_lot", {"customer": cref, "asset": "POINTS", "amount": 50, "expires_at": "2099-01-01T00:00:00Z"})
    op("spend_lot", {"customer": cref, "asset": "POINTS", "amount": 20})
    other = new_customer("ct2")
    op("transfer", {"from": {"customer": cref}, "to": {"customer": other}, "amount": 123})
    assert_reconciled([cref, other])
    return out, (subs(cref), subs(other))


def test_every_writer_of_this_engine_gives_the_same_results(app, db_conn, monkeypatch):
    runs = []
    for writer in core.writers():
        monkeypatch.setattr(core, "_writer", lambda resolved, w=writer: w)
        runs.append(_scenario())
    for results, balances in runs[1:]:
        assert results == runs[0][0]
        assert balances == runs[0][1]
    results, (mine, theirs) = runs[0]
    assert mine == {"available": 19877, "cashback": 0, "frozen": 0, "overdraft": -4560}
    assert theirs["available"] == 123
    assert [r["operation"] for r in results] == ["consume", "refund", "withdraw", "settle_hold", "consume",
                                                 "recharge", "grant_lot", "spend_lot", "transfer"]


@pytest.mark.parametrize("with_key", [False, True])
def test_a_consume_answers_alike_alone_and_in_a_batch(app, db_conn, with_key):
    """Batched consumes without their own key go through the bulk writer on PostgreSQL: same answer."""
    cref = new_customer("cb", cash=5000)
    body = {"customer": cref, "amount": 250}
    single = ledger.apply_operation("consume", body, "contract", idempotency_key=ref("k"))
    item = {"op": "consume", "body": body}
    if with_key:
        item["idempotency_key"] = ref("k")
    batched = ledger.apply_batch([item], "contract", batch_key=ref("b"))["results"][0]
    assert batched["status"] == 201
    expected = _scrub({**single, "journal": {k: v for k, v in single["journal"].items() if k != "entries"}})
    assert _scrub(batched["result"]) == expected
