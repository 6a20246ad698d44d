"""Ledger service: every operation, its rules and failures, idempotency, append-only, reconciliation, crashes."""
import datetime as dt
import json
from pathlib import Path

import pytest
import yaml

from app.models.ledger import LedgerEntry, LedgerHold, LedgerJournal
from app.platform import clock
from tests.ledger_factories import assert_reconciled, crash_at, new_customer, problem, ref, subs

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def ledger(db_conn):
    from app.services import ledger as svc
    return svc


def _iso(delta):
    return (dt.datetime.now(dt.timezone.utc) + delta).isoformat()


# --------------------------------------------------------------------------- policy


def test_ledger_policy_validates_against_its_schema_and_cross_checks():
    from jsonschema import Draft202012Validator

    from app.services.ledger.core import cross_check
    schema = json.loads((ROOT / "schemas/policies/ledger.json").read_text())
    doc = yaml.safe_load((ROOT / "policies/ledger.yaml").read_text())
    Draft202012Validator.check_schema(schema)
    assert list(Draft202012Validator(schema).iter_errors(doc)) == []
    assert cross_check(doc) == []


def test_cross_check_names_every_unknown_reference():
    from app.services.ledger.core import cross_check
    doc = yaml.safe_load((ROOT / "policies/ledger.yaml").read_text())
    doc["account_types"]["cash"]["asset"] = "USD"
    doc["customer_kinds"]["user"]["accounts"].append("gold")
    doc["routes"]["consume_to"] = "nowhere"
    errors = cross_check(doc)
    assert any("account_types.cash.asset" in e for e in errors)
    assert any("customer_kinds.user.accounts[5]" in e for e in errors)
    assert any("routes.consume_to" in e for e in errors)


# --------------------------------------------------------------------------- customers


def test_ensure_customer_opens_policy_accounts_and_is_idempotent(ledger):
    cref = ref("u")
    first = ledger.ensure_customer(cref)
    again = ledger.ensure_customer(cref)
    assert first == again
    types = {a["account_type"]: a for a in first["accounts"]}
    assert set(types) == {"cash", "credit", "points", "red_packet", "voucher"}
    assert set(types["cash"]["sub_accounts"]) == {"available", "cashback", "frozen", "overdraft"}
    assert types["cash"]["overdraft_limit"] == 5000
    assert problem(ledger.ensure_customer, cref, "merchant").code == "customer-kind-mismatch"
    assert problem(ledger.balances, ref("nobody")).status == 404


def test_merchant_holds_several_cash_accounts(ledger):
    m = new_customer("m", kind="merchant")
    ledger.open_account(m, "cash", "store-2")
    labels = sorted(a["label"] for a in ledger.balances(m)["accounts"])
    assert labels == ["default", "store-2"]
    u = new_customer(cash=1000)
    assert problem(ledger.open_account, u, "cash", "second").code == "account-type-not-allowed"
    ledger.apply_operation("transfer", {"from": {"customer": u}, "to": {"customer": m, "label": "store-2"},
                                        "amount": 400}, "test")
    assert subs(m, label="store-2")["available"] == 400 and subs(u)["available"] == 600
    assert_reconciled([u, m])


# --------------------------------------------------------------------------- consume / refund


def test_consume_uses_cashback_then_available_then_overdraft(ledger):
    cref = new_customer(cash=1000, cashback=200)
    r = ledger.apply_operation("consume", {"customer": cref, "amount": 1500, "external_ref": "order-1"}, "test")
    assert r["consume"] == {"journal_id": r["journal"]["id"], "amount": 1500, "cashback": 200, "available": 1000,
                            "overdraft": 300, "refundable": 1500}
    assert subs(cref) == {"available": 0, "cashback": 0, "frozen": 0, "overdraft": -300}
    j = ledger.journal(r["journal"]["id"])
    assert j["type"] == "consume" and j["external_ref"] == "order-1" and j["policy_version"]
    assert sum(e["amount"] for e in j["entries"]) == 0
    assert {e["sub"]: e["balance_after"] for e in j["entries"] if not e.get("system")} == {
        "cashback": 0, "available": 0, "overdraft": -300}
    assert_reconciled([cref])


def test_consume_beyond_overdraft_limit_is_insufficient_funds(ledger):
    cref = new_customer(cash=1000)
    exc = problem(ledger.apply_operation, "consume", {"customer": cref, "amount": 6001}, "test")
    assert (exc.status, exc.code) == (409, "insufficient-funds")
    assert exc.extra == {"needed": 6001, "available": 6000, "account": f"{cref}/cash/default"}
    ledger.apply_operation("consume", {"customer": cref, "amount": 6000}, "test")
    assert subs(cref)["overdraft"] == -5000
    assert_reconciled([cref])


def test_refund_goes_back_in_reverse_order_partially_never_beyond(ledger):
    cref = new_customer(cash=1000, cashback=200)
    c = ledger.apply_operation("consume", {"customer": cref, "amount": 1500}, "test")["consume"]
    r1 = ledger.apply_operation("refund", {"consume_id": c["journal_id"], "amount": 400}, "test")["refund"]
    assert (r1["overdraft"], r1["available"], r1["cashback"]) == (300, 100, 0)
    r2 = ledger.apply_operation("refund", {"consume_id": c["journal_id"], "amount": 1000}, "test")["refund"]
    assert (r2["overdraft"], r2["available"], r2["cashback"]) == (0, 900, 100)
    exc = problem(ledger.apply_operation, "refund", {"consume_id": c["journal_id"], "amount": 101}, "test")
    assert exc.code == "refund-exceeds-remaining" and exc.extra["remaining"] == 100
    ledger.apply_operation("refund", {"consume_id": c["journal_id"], "amount": 100}, "test")
    assert subs(cref) == {"available": 1000, "cashback": 200, "frozen": 0, "overdraft": 0}
    assert problem(ledger.apply_operation, "refund", {"consume_id": c["journal_id"], "amount": 1},
                   "test").code == "refund-exceeds-remaining"
    assert problem(ledger.apply_operation, "refund", {"consume_id": 10**12, "amount": 1}, "test").status == 404
    assert_reconciled([cref])


def test_refund_of_overdraft_already_repaid_lands_in_available(ledger):
    cref = new_customer(cash=100)
    c = ledger.apply_operation("consume", {"customer": cref, "amount": 300}, "test")["consume"]
    assert c["overdraft"] == 200
    ledger.apply_operation("recharge", {"customer": cref, "amount": 500}, "test")
    ledger.apply_operation("credit_repay", {"customer": cref, "account_type": "cash", "amount": 150}, "test")
    r = ledger.apply_operation("refund", {"consume_id": c["journal_id"], "amount": 300}, "test")["refund"]
    assert (r["overdraft"], r["available"]) == (50, 250)
    assert subs(cref)["overdraft"] == 0
    assert_reconciled([cref])


def test_consume_to_a_merchant_and_refund_from_it(ledger):
    u, m = new_customer(cash=1000), new_customer("m", kind="merchant")
    c = ledger.apply_operation("consume", {"customer": u, "amount": 700, "payee": {"customer": m}}, "test")
    assert subs(m)["available"] == 700
    ledger.apply_operation("transfer", {"from": {"customer": m}, "to": {"customer": u}, "amount": 650}, "test")
    exc = problem(ledger.apply_operation, "refund", {"consume_id": c["journal"]["id"], "amount": 100}, "test")
    assert exc.code == "insufficient-funds" and exc.extra["account"] == f"{m}/cash/default"
    ledger.apply_operation("refund", {"consume_id": c["journal"]["id"], "amount": 50}, "test")
    assert subs(m)["available"] == 0
    assert_reconciled([u, m])


# --------------------------------------------------------------------------- holds


def test_withdraw_hold_partial_settle_releases_the_rest_exactly_once(ledger):
    cref = new_customer(cash=1000)
    h = ledger.apply_operation("withdraw", {"customer": cref, "amount": 600, "external_ref": "wd-1"}, "test")["hold"]
    assert subs(cref) == {"available": 400, "cashback": 0, "frozen": 600, "overdraft": 0}
    assert ledger.balances(cref)["accounts"][0]["pending_withdrawal"] == 600
    s = ledger.apply_operation("settle_hold", {"hold_id": h["id"], "amount": 450}, "test")["hold"]
    assert (s["state"], s["settled"], s["remaining"]) == ("settled", 450, 0)
    assert subs(cref) == {"available": 550, "cashback": 0, "frozen": 0, "overdraft": 0}
    for op in ("settle_hold", "release_hold"):
        exc = problem(ledger.apply_operation, op, {"hold_id": h["id"]}, "test")
        assert (exc.code, exc.extra["state"]) == ("hold-not-held", "settled")
    assert_reconciled([cref])


def test_withdraw_release_and_expiry_job(ledger, monkeypatch):
    import jobs.ledger as jl
    cref = new_customer(cash=1000)
    h1 = ledger.apply_operation("withdraw", {"customer": cref, "amount": 100}, "test")["hold"]
    h2 = ledger.apply_operation("withdraw", {"customer": cref, "amount": 200}, "test")["hold"]
    assert problem(ledger.apply_operation, "settle_hold", {"hold_id": h1["id"], "amount": 101},
                   "test").code == "amount-exceeds-hold"
    assert ledger.apply_operation("release_hold", {"hold_id": h1["id"]}, "test")["hold"]["state"] == "released"
    LedgerHold.update(expires_at=clock.now() - dt.timedelta(seconds=1)).where(LedgerHold.id == h2["id"]).execute()
    assert jl.expire_holds() >= 1
    assert ledger.hold(h2["id"])["state"] == "expired"
    # a second run (other tests' holds may be due meanwhile) leaves this expired hold and its money alone
    entries = LedgerEntry.select().join(LedgerHold, on=(LedgerEntry.journal == LedgerHold.resolved_journal))
    before = (ledger.hold(h2["id"]), entries.where(LedgerHold.id == h2["id"]).count(), subs(cref))
    jl.expire_holds()
    assert (ledger.hold(h2["id"]), entries.where(LedgerHold.id == h2["id"]).count(), subs(cref)) == before
    assert subs(cref) == {"available": 1000, "cashback": 0, "frozen": 0, "overdraft": 0}
    assert problem(ledger.apply_operation, "withdraw", {"customer": cref, "amount": 1001},
                   "test").code == "insufficient-funds"
    assert_reconciled([cref])


def test_freeze_and_partial_unfreeze_with_reason(ledger):
    cref = new_customer(cash=1000)
    h = ledger.apply_operation("freeze", {"customer": cref, "amount": 700, "reason": "risk: chargeback"},
                               "test")["hold"]
    assert h["kind"] == "risk" and h["reason"] == "risk: chargeback"
    exc = problem(ledger.apply_operation, "consume", {"customer": cref, "amount": 5301}, "test")
    assert exc.code == "insufficient-funds" and exc.extra["available"] == 5300
    h = ledger.apply_operation("unfreeze", {"hold_id": h["id"], "amount": 300, "reason": "partly cleared"},
                               "test")["hold"]
    assert (h["state"], h["remaining"]) == ("held", 400)
    assert_reconciled([cref])
    h = ledger.apply_operation("unfreeze", {"hold_id": h["id"], "reason": "cleared"}, "test")["hold"]
    assert h["state"] == "released"
    assert problem(ledger.apply_operation, "release_hold", {"hold_id": h["id"]}, "test").code == "wrong-hold-kind"
    assert subs(cref)["frozen"] == 0 and subs(cref)["available"] == 1000
    assert_reconciled([cref])


def test_block_debit_and_credit(ledger):
    cref = new_customer(cash=1000)
    ledger.apply_operation("block", {"customer": cref, "debit": True, "reason": "fraud check"}, "test")
    exc = problem(ledger.apply_operation, "consume", {"customer": cref, "amount": 1}, "test")
    assert (exc.status, exc.code, exc.extra["block"]) == (409, "account-blocked", "debit")
    ledger.apply_operation("recharge", {"customer": cref, "amount": 5}, "test")  # credits still allowed
    ledger.apply_operation("block", {"customer": cref, "credit": True, "reason": "frozen by court"}, "test")
    assert problem(ledger.apply_operation, "recharge", {"customer": cref, "amount": 5}, "test").extra["block"] == "credit"
    r = ledger.apply_operation("unblock", {"customer": cref, "debit": True, "credit": True, "reason": "ok"}, "test")
    assert r["account"]["debit_blocked"] is False and r["account"]["credit_blocked"] is False
    ledger.apply_operation("consume", {"customer": cref, "amount": 1}, "test")
    assert problem(ledger.apply_operation, "block", {"customer": cref, "reason": "x"}, "test").code == "validation-failed"
    from app.policy import decisions
    log = decisions.for_subject(f"ledger-account:{cref}/cash/default")
    assert [d["outcome"] for d in log] == [{"debit_blocked": True, "credit_blocked": False},
                                           {"debit_blocked": True, "credit_blocked": True},
                                           {"debit_blocked": False, "credit_blocked": False}]
    assert log[0]["inputs"]["reason"] == "fraud check" and log[0]["version"]


# --------------------------------------------------------------------------- settlement, credit


def test_settlement_in_and_out(ledger):
    cref = new_customer(cash=3000)
    ledger.apply_operation("settlement", {"customer": cref, "amount": 1500, "direction": "out",
                                          "bill_ref": "card-fee-2026-11"}, "test")
    ledger.apply_operation("settlement", {"customer": cref, "amount": 250, "direction": "in", "sub": "cashback",
                                          "bill_ref": "cashback-2026-11"}, "test")
    assert subs(cref) == {"available": 1500, "cashback": 250, "frozen": 0, "overdraft": 0}
    assert problem(ledger.apply_operation, "settlement", {"customer": cref, "amount": 1501, "direction": "out",
                                                          "bill_ref": "x"}, "test").code == "insufficient-funds"
    assert problem(ledger.apply_operation, "settlement", {"customer": cref, "amount": 1, "direction": "in",
                                                          "bill_ref": "x", "counterparty": "breakage"},
                   "test").code == "unknown-system-account"
    assert_reconciled([cref])


def test_credit_draw_and_repay_within_the_policy_limit(ledger):
    cref = new_customer()
    ledger.apply_operation("credit_draw", {"customer": cref, "amount": 300000}, "test")
    exc = problem(ledger.apply_operation, "credit_draw", {"customer": cref, "amount": 200001}, "test")
    assert exc.code == "credit-limit-exceeded" and exc.extra["available"] == 200000
    assert subs(cref, "credit")["overdraft"] == -300000 and subs(cref)["available"] == 300000
    assert problem(ledger.apply_operation, "credit_repay", {"customer": cref, "amount": 300001},
                   "test").code == "repay-exceeds-debt"
    ledger.apply_operation("credit_repay", {"customer": cref, "amount": 300000}, "test")
    assert subs(cref, "credit")["overdraft"] == 0 and subs(cref)["available"] == 0
    assert_reconciled([cref])


# --------------------------------------------------------------------------- lots


def test_lots_spend_earliest_expiring_first_and_expire_to_breakage(ledger):
    import jobs.ledger as jl
    from app.models.ledger import LedgerLot
    cref = new_customer()
    late = ledger.apply_operation("grant_lot", {"customer": cref, "asset": "POINTS", "amount": 100,
                                                "expires_at": _iso(dt.timedelta(days=60))}, "test")["lot"]
    never = ledger.apply_operation("grant_lot", {"customer": cref, "asset": "POINTS", "amount": 100}, "test")["lot"]
    soon = ledger.apply_operation("grant_lot", {"customer": cref, "asset": "POINTS", "amount": 100,
                                                "expires_at": _iso(dt.timedelta(days=1))}, "test")["lot"]
    used = ledger.apply_operation("spend_lot", {"customer": cref, "asset": "POINTS", "amount": 150}, "test")["lots_used"]
    assert [(u["lot_id"], u["amount"]) for u in used] == [(soon["id"], 100), (late["id"], 50)]
    open_lots = ledger.lots(cref, "POINTS")
    assert [(lot["id"], lot["remaining"]) for lot in open_lots] == [(late["id"], 50), (never["id"], 100)]
    assert open_lots[0]["expires_at"].endswith("Z")
    # the late lot expires: it is no longer spendable, and the job moves it to breakage
    LedgerLot.update(expires_at=clock.now() - dt.timedelta(seconds=1)).where(LedgerLot.id == late["id"]).execute()
    exc = problem(ledger.apply_operation, "spend_lot", {"customer": cref, "asset": "POINTS", "amount": 101}, "test")
    assert exc.code == "insufficient-funds" and exc.extra["available"] == 100
    assert jl.expire_lots() >= 1
    assert [lot["id"] for lot in ledger.lots(cref, "POINTS")] == [never["id"]]
    assert subs(cref, "points")["available"] == 100
    journals = [e for e in ledger.statement(customer=cref, type="lot_expire")["items"]]
    assert len(journals) == 1 and journals[0]["amount"] == -50
    assert any(e.get("account_type") == "breakage" for e in ledger.journal(journals[0]["journal_id"])["entries"])
    assert problem(ledger.apply_operation, "recharge", {"customer": cref, "account_type": "points", "amount": 1},
                   "test").code == "lot-asset"
    assert problem(ledger.apply_operation, "grant_lot", {"customer": cref, "asset": "CNY", "amount": 1},
                   "test").code == "not-a-lot-asset"
    assert_reconciled([cref])


# --------------------------------------------------------------------------- idempotency, atomicity


def test_same_key_same_body_replays_other_body_conflicts(ledger):
    cref = new_customer()
    key = ref("k")
    body = {"customer": cref, "amount": 100}
    first = ledger.apply_operation("recharge", body, "test", idempotency_key=key, client="c1")
    again = ledger.apply_operation("recharge", dict(body), "test", idempotency_key=key, client="c1")
    assert first == again
    assert LedgerJournal.select().where((LedgerJournal.client == "c1") & (LedgerJournal.idempotency_key == key)).count() == 1
    assert problem(ledger.apply_operation, "recharge", {**body, "amount": 101}, "test",
                   idempotency_key=key, client="c1").code == "idempotency-key-reused"
    other = ledger.apply_operation("recharge", body, "test", idempotency_key=key, client="c2")  # keys are per client
    assert other["journal"]["id"] != first["journal"]["id"]
    assert subs(cref)["available"] == 200


def test_runs_in_the_callers_transaction(ledger, db_conn):
    cref = new_customer()
    with pytest.raises(RuntimeError):
        with db_conn.atomic():
            ledger.apply_operation("recharge", {"customer": cref, "amount": 100}, "test", idempotency_key=ref("k"))
            raise RuntimeError("caller fails after the ledger call")
    assert subs(cref)["available"] == 0
    assert_reconciled([cref])


@pytest.mark.parametrize("step", ["after-journal", "after-balances", "after-entries", "before-commit"])
def test_crash_between_steps_leaves_nothing_and_retry_succeeds_once(ledger, step):
    cref = new_customer(cash=1000)
    key = ref("crash")
    body = {"customer": cref, "amount": 400, "external_ref": "order-crash"}

    with crash_at(step), pytest.raises(ConnectionError):
        ledger.apply_operation("consume", body, "test", idempotency_key=key)
    assert LedgerJournal.select().where(LedgerJournal.idempotency_key == key).count() == 0
    assert subs(cref)["available"] == 1000
    first = ledger.apply_operation("consume", body, "test", idempotency_key=key)
    assert ledger.apply_operation("consume", body, "test", idempotency_key=key) == first
    assert subs(cref)["available"] == 600
    assert_reconciled([cref])


def test_journals_and_entries_are_append_only(ledger, db_conn):
    import peewee as pw
    cref = new_customer(cash=100)
    entry = LedgerEntry.select().where(LedgerEntry.customer.is_null(False)).order_by(LedgerEntry.id.desc()).first()
    for stmt in (LedgerEntry.update(amount_minor=1).where(LedgerEntry.id == entry.id),
                 LedgerEntry.delete().where(LedgerEntry.id == entry.id),
                 LedgerJournal.update(type="x").where(LedgerJournal.id == entry.journal_id)):
        with pytest.raises((pw.IntegrityError, pw.InternalError, pw.OperationalError)):
            with db_conn.atomic():
                stmt.execute()
    assert_reconciled([cref])


def test_reconcile_reports_drift_it_does_not_hide_it(ledger, db_conn):
    from app.models.ledger import LedgerBalance
    cref = new_customer(cash=1000)
    acct_id = ledger.balances(cref)["accounts"][0]["id"]
    row = LedgerBalance.get((LedgerBalance.account == acct_id) & (LedgerBalance.sub == "available"))
    LedgerBalance.update(balance_minor=LedgerBalance.balance_minor + 7).where(LedgerBalance.id == row.id).execute()
    try:
        report = ledger.reconcile(customers=[cref])
        assert not report["ok"]
        drift = report["checks"]["snapshot_equals_entries"]["drift"]
        assert drift == [{"balance_id": row.id, "account_id": acct_id, "sub": "available",
                          "snapshot": 1007, "entries": 1000}]
        assert not report["checks"]["snapshot_equals_last_balance_after"]["ok"]
        assert not ledger.reconcile()["checks"]["asset_sums_zero"]["ok"]
    finally:
        LedgerBalance.update(balance_minor=LedgerBalance.balance_minor - 7).where(LedgerBalance.id == row.id).execute()
    assert_reconciled([cref])


def test_reconcile_job_stores_its_report(ledger):
    import jobs.ledger as jl
    from app.models.ledger import LedgerReconciliation
    before = LedgerReconciliation.select().count()
    out = jl.reconcile()
    assert out == {"ok": True, "failed_checks": []}
    assert LedgerReconciliation.select().count() == before + 1
    assert ("jobs.ledger.reconcile", "*/10 * * * *") in jl.PERIODIC


def test_seed_demo_is_idempotent(ledger):
    ledger.seed_demo()
    before = subs("demo-user")
    ledger.seed_demo()
    assert subs("demo-user") == before and before["available"] == 100000 and before["cashback"] == 1500


def test_batch_items_see_each_others_effects_and_a_late_failure_aborts_all(ledger, monkeypatch):
    cref = new_customer(cash=1000)
    out = ledger.apply_batch([
        {"op": "consume", "body": {"customer": cref, "amount": 400}},
        {"op": "block", "body": {"customer": cref, "debit": True, "reason": "r"}},
        {"op": "consume", "body": {"customer": cref, "amount": 1}},
        {"op": "unblock", "body": {"customer": cref, "debit": True, "reason": "r"}},
        {"op": "consume", "body": {"customer": cref, "amount": 5601}},
        {"op": "consume", "body": {"customer": cref, "amount": 5600}},
    ], "test", batch_key=ref("b"))
    assert [r["status"] for r in out["results"]] == [201, 200, 409, 200, 409, 201]
    assert out["results"][2]["problem"]["code"] == "account-blocked"
    assert subs(cref)["overdraft"] == -5000
    assert_reconciled([cref])

    # an operation that raised after writing cannot be rolled back alone: the whole batch is refused
    from app.errors import Problem
    real = ledger.OPERATIONS["recharge"]

    def late_failure(ctx, body):
        real(ctx, body)
        raise Problem(409, "late", "Late failure")
    monkeypatch.setitem(ledger.OPERATIONS, "recharge", late_failure)
    with pytest.raises(RuntimeError, match="batch aborted"):
        ledger.apply_batch([{"op": "consume", "body": {"customer": cref, "amount": 1}},
                            {"op": "recharge", "body": {"customer": cref, "amount": 7}}], "test")
    assert subs(cref)["overdraft"] == -5000 and subs(cref)["available"] == 0
    assert_reconciled([cref])


def test_ledger_cross_check_is_registered_with_the_policy_engine():
    from app.policy import kinds
    from app.services.ledger import core as ledger_core
    import app.services.ledger  # noqa: F401  (registers on import)
    assert ledger_core.cross_check_set in kinds.registered()["ledger"]

    class FakeSet:
        def get(self, kind):
            return [{"_file": "policies/ledger.yaml", "assets": {"CNY": {"scale": 2}},
                     "account_types": {"cash": {"asset": "USD", "sub_accounts": ["available"]}}}]
    assert ledger_core.cross_check_set(FakeSet()) == [
        ("policies/ledger.yaml", "$.account_types.cash.asset", "unknown asset 'USD'")]


def test_ledger_jobs_run_through_the_job_runner(ledger):
    import jobs
    ref_ = jobs.enqueue("jobs.ledger.reconcile", job_id=jobs.job_id_for("jobs.ledger.reconcile", ref("t")))
    assert ref_.status == "succeeded" and ref_.result["ok"] is True
    for path in ("jobs.ledger.expire_holds", "jobs.ledger.expire_lots"):
        assert jobs.enqueue(path).status == "succeeded"


def test_a_batch_of_many_consumes_matches_posting_them_one_by_one(ledger):
    """On PostgreSQL runs of consumes are written in bulk; balances, entries and results must not differ."""
    users = [new_customer(cash=300, cashback=50) for _ in range(3)]
    merchant = new_customer("m", kind="merchant")
    items = []
    for k in range(60):
        body = {"customer": users[k % 3], "amount": 7 + k % 5, "external_ref": f"o-{k}"}
        if k % 4 == 0:
            body["payee"] = {"customer": merchant}
        items.append({"op": "consume", "body": body})
    items.insert(30, {"op": "recharge", "body": {"customer": users[0], "amount": 1}})  # splits the run
    items.insert(10, {"op": "consume", "body": {"customer": users[1], "amount": 10**9}})  # fails mid-run
    out = ledger.apply_batch(items, "test", batch_key=ref("bulk"))
    twins = [new_customer(cash=300, cashback=50) for _ in range(3)]
    twin_merchant = new_customer("m", kind="merchant")
    swap = dict(zip(users + [merchant], twins + [twin_merchant]))
    singles = []
    for item in items:
        body = dict(item["body"], customer=swap[item["body"]["customer"]])
        if "payee" in body:
            body["payee"] = {"customer": twin_merchant}
        try:
            singles.append(ledger.apply_operation(item["op"], body, "test"))
        except Exception as exc:  # noqa: BLE001 - compare failures too
            singles.append(exc.code)
    assert out["succeeded"] == sum(1 for s in singles if isinstance(s, dict)) == len(items) - 1
    for r, single in zip(out["results"], singles):
        if isinstance(single, str):
            assert r["problem"]["code"] == single
        else:
            assert r["status"] == 201
            if single["operation"] == "consume":
                assert {k: v for k, v in r["result"]["consume"].items() if k != "journal_id"} == \
                    {k: v for k, v in single["consume"].items() if k != "journal_id"}
    for u, t in swap.items():
        assert subs(u) == subs(t)
    for r in out["results"][:5]:
        j = ledger.journal(r["result"]["journal"]["id"])
        assert j["external_ref"] and sum(e["amount"] for e in j["entries"]) == 0
    assert_reconciled(list(swap) + list(swap.values()))


# --------------------------------------------------------------------------- time (the controllable clock)


def test_every_time_decision_follows_the_controllable_clock(ledger):
    # A replayed past year: lots granted then are live then, holds expire by that clock, journals carry its time.
    import jobs.ledger as jobs_ledger
    from app.platform import clock
    clock.set_now(dt.datetime(2024, 6, 1, 12, 0))
    try:
        cref = new_customer(cash=1000)
        grant = ledger.apply_operation("grant_lot", {"customer": cref, "asset": "POINTS", "amount": 100,
                                                     "expires_at": "2025-01-01T00:00:00Z"}, "test")
        assert grant["journal"]["created_at"] == "2024-06-01T12:00:00Z"
        assert grant["lot"]["created_at"] == "2024-06-01T12:00:00Z"
        spent = ledger.apply_operation("spend_lot", {"customer": cref, "asset": "POINTS", "amount": 30}, "test")
        assert [u["amount"] for u in spent["lots_used"]] == [30]
        hold = ledger.apply_operation("withdraw", {"customer": cref, "amount": 400}, "test")["hold"]
        assert hold["expires_at"] == "2024-06-02T12:00:00Z"  # + the policy's 1440 minutes
        jobs_ledger.expire_holds()
        jobs_ledger.expire_lots()
        assert ledger.hold(hold["id"])["state"] == "held"
        assert [lot["remaining"] for lot in ledger.lots(cref, "POINTS")] == [70]
        assert ledger.statement(customer=cref, since="2024-06-01T00:00:00Z", until="2024-06-02T00:00:00Z")["items"]

        clock.set_now(dt.datetime(2024, 6, 2, 12, 1))  # the hold's timeout has passed, the lot is still live
        assert jobs_ledger.expire_holds() >= 1
        assert ledger.hold(hold["id"])["state"] == "expired"
        assert ledger.hold(hold["id"])["resolved_at"] == "2024-06-02T12:01:00Z"
        clock.set_now(dt.datetime(2025, 1, 1, 0, 0, 1))  # the lot has expired: not spendable, expired by the job
        assert problem(ledger.apply_operation, "spend_lot",
                       {"customer": cref, "asset": "POINTS", "amount": 1}, "test").code == "insufficient-funds"
    finally:
        clock.set_now(None)
    assert problem(ledger.execute, "expire_lot", {"lot_id": grant["lot"]["id"]}, "system",
                   at="2024-12-31T23:59:59Z").code == "lot-not-expired"  # an explicit instant wins over the clock
    assert jobs_ledger.expire_lots(at="2025-01-01T00:00:01Z") >= 1
    assert ledger.lots(cref, "POINTS") == []
    points = [a for a in ledger.balances(cref)["accounts"] if a["asset"] == "POINTS"][0]
    assert points["sub_accounts"]["available"] == 0
    assert subs(cref) == {"available": 1000, "cashback": 0, "frozen": 0, "overdraft": 0}
    assert_reconciled([cref])
