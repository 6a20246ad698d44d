"""Ledger over real HTTP: the README walkthrough, idempotency headers, validation, scopes, reads, batch, CLI."""
import os
import subprocess
import sys

import pytest

from tests.conftest import Http, make_token
from tests.ledger_factories import crash_at, ref


@pytest.fixture()
def customer(http):
    cref = ref("h")
    r = http.post("/v1/ledger/customers", json={"external_ref": cref})
    assert r.status_code == 201, r.text
    return cref


def cash(http, cref):
    accounts = http.get(f"/v1/ledger/customers/{cref}/balances").json()["accounts"]
    return next(a for a in accounts if a["account_type"] == "cash")


def test_walkthrough_recharge_consume_with_cashback_refund_withdraw_settle(http, customer):
    r = http.post("/v1/ledger/recharge", json={"customer": customer, "amount": 10000, "external_ref": "pay-1"},
                  key=ref("k"))
    assert r.status_code == 201, r.text
    r = http.post("/v1/ledger/settlement", json={"customer": customer, "amount": 500, "direction": "in",
                                                 "sub": "cashback", "bill_ref": "cb-1"}, key=ref("k"))
    assert r.status_code == 201, r.text
    r = http.post("/v1/ledger/consume", json={"customer": customer, "amount": 3000, "external_ref": "order-1"},
                  key=ref("k"))
    assert r.status_code == 201, r.text
    consume = r.json()["consume"]
    assert (consume["cashback"], consume["available"], consume["overdraft"]) == (500, 2500, 0)
    r = http.post("/v1/ledger/refund", json={"consume_id": consume["journal_id"], "amount": 1000,
                                             "external_ref": "refund-1"}, key=ref("k"))
    assert r.status_code == 201 and r.json()["refund"]["available"] == 1000
    r = http.post("/v1/ledger/withdraw", json={"customer": customer, "amount": 4000}, key=ref("k"))
    hold = r.json()["hold"]
    assert r.status_code == 201 and hold["state"] == "held"
    r = http.post("/v1/ledger/settle-hold", json={"hold_id": hold["id"], "amount": 3000}, key=ref("k"))
    assert r.status_code == 201 and r.json()["hold"]["state"] == "settled"
    c = cash(http, customer)
    assert c["sub_accounts"] == {"available": 5500, "cashback": 0, "frozen": 0, "overdraft": 0}
    assert c["spendable"] == 10500
    r = http.get(f"/v1/ledger/journals/{consume['journal_id']}")
    assert r.status_code == 200 and len(r.json()["entries"]) == 3
    r = http.get(f"/v1/ledger/reconcile?customer={customer}")
    assert r.status_code == 200 and r.json()["ok"], r.json()


def test_idempotency_header_replays_with_same_status_and_rejects_other_body(http, customer):
    key = ref("k")
    body = {"customer": customer, "amount": 100}
    first = http.post("/v1/ledger/recharge", json=body, key=key)
    again = http.post("/v1/ledger/recharge", json=body, key=key)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again.headers.get("Idempotent-Replayed") == "true"
    other = http.post("/v1/ledger/recharge", json={**body, "amount": 101}, key=key)
    assert other.status_code == 409 and other.json()["code"] == "idempotency-key-reused"
    assert http.post("/v1/ledger/recharge", json=body, key=False).status_code == 428
    assert cash(http, customer)["sub_accounts"]["available"] == 100

def test_consume_replay_returns_the_record_written_with_the_journal(http, customer):
    # On PostgreSQL a single consume writes its idempotency record in the journal's statement: the replay
    # must be that very result, the journal written once, a different body still a 409.
    http.post("/v1/ledger/recharge", json={"customer": customer, "amount": 500}, key=ref("k"))
    key = ref("k")
    body = {"customer": customer, "amount": 120, "metadata": {"note": "café ☕", "n": -1}}
    first = http.post("/v1/ledger/consume", json=body, key=key)
    again = http.post("/v1/ledger/consume", json=body, key=key)
    assert first.status_code == again.status_code == 201, first.json()
    assert again.json() == first.json() and again.headers.get("Idempotent-Replayed") == "true"
    j = first.json()["journal"]
    assert first.json()["consume"]["journal_id"] == j["id"]
    stored = http.get(f"/v1/ledger/journals/{j['id']}").json()
    assert sorted((e["amount"], e["balance_after"]) for e in stored["entries"]) == \
        sorted((e["amount"], e["balance_after"]) for e in j["entries"])
    other = http.post("/v1/ledger/consume", json={**body, "amount": 121}, key=key)
    assert other.status_code == 409 and other.json()["code"] == "idempotency-key-reused"
    assert cash(http, customer)["sub_accounts"]["available"] == 380



def test_insufficient_funds_problem_has_needed_available_account(http, customer):
    r = http.post("/v1/ledger/consume", json={"customer": customer, "amount": 5001}, key=ref("k"))
    assert r.status_code == 409 and r.headers["Content-Type"].startswith("application/problem+json")
    body = r.json()
    assert (body["code"], body["needed"], body["available"], body["account"]) == (
        "insufficient-funds", 5001, 5000, f"{customer}/cash/default")


@pytest.mark.parametrize("amount", [0, -1, 2**53 + 1, 1.5, "10", None, True])
def test_bad_amounts_are_422_never_500(http, customer, amount):
    r = http.post("/v1/ledger/recharge", json={"customer": customer, "amount": amount}, key=ref("k"))
    assert r.status_code == 422 and r.json()["code"] == "validation-failed"
    assert r.json()["errors"][0]["pointer"] == "/amount"


def test_validation_lists_every_field_and_unknowns_are_404(http, customer):
    r = http.post("/v1/ledger/transfer", json={"from": {}, "amount": 0, "extra": 1}, key=ref("k"))
    assert r.status_code == 422
    pointers = {e["pointer"] for e in r.json()["errors"]}
    assert {"", "/amount", "/from"} <= pointers
    r = http.post("/v1/ledger/recharge", json={"customer": ref("nobody"), "amount": 1}, key=ref("k"))
    assert r.status_code == 404 and r.json()["code"] == "customer-not-found"
    r = http.post("/v1/ledger/recharge", json={"customer": customer, "account_type": "gold", "amount": 1},
                  key=ref("k"))
    assert r.status_code == 404 and r.json()["code"] == "account-not-found"
    assert http.get("/v1/ledger/journals/999999999").status_code == 404
    assert http.get("/v1/ledger/holds/999999999").status_code == 404
    assert http.get("/v1/ledger/statement?customer=x&limit=0").status_code == 422
    assert http.get("/v1/ledger/statement").status_code == 422
    assert http.get(f"/v1/ledger/statement?customer={customer}&since=yesterday").status_code == 422
    assert http.get("/v1/ledger/statement?customer=a%00b").status_code == 422
    assert http.get("/v1/ledger/customers/a%00b/balances").status_code == 422  # NUL in a path: refused as text
    r = http.post("/v1/ledger/recharge", json={"customer": customer, "amount": 1, "external_ref": "a\u0000b"},
                  key=ref("k"))
    assert r.status_code == 422
    assert http.post("/v1/ledger/recharge", data="{", headers={"Content-Type": "application/json",
                                                               "Idempotency-Key": "x"}).status_code == 400


def test_scopes(server, customer):
    reader = Http(server, make_token(["ledger:read"]))
    assert reader.get(f"/v1/ledger/customers/{customer}/balances").status_code == 200
    r = reader.post("/v1/ledger/recharge", json={"customer": customer, "amount": 1}, key=ref("k"))
    assert r.status_code == 403 and r.json()["required_scope"] == "ledger:write"
    other = Http(server, make_token(["tickets:write"]))
    assert other.get("/v1/ledger/reconcile").status_code == 403
    assert Http(server).get(f"/v1/ledger/customers/{customer}/balances").status_code == 401


def test_statement_is_cursor_paginated_and_filtered(http, customer):
    for i in range(5):
        assert http.post("/v1/ledger/recharge", json={"customer": customer, "amount": 10 + i}, key=ref("k")).ok
    assert http.post("/v1/ledger/consume", json={"customer": customer, "amount": 3}, key=ref("k")).ok
    seen, cursor = [], None
    while True:
        r = http.get("/v1/ledger/statement", params={"customer": customer, "limit": 2, "cursor": cursor})
        assert r.status_code == 200
        page = r.json()
        seen += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert [e["amount"] for e in seen] == [-3, 14, 13, 12, 11, 10]
    assert all(e["account_type"] == "cash" for e in seen)
    ids = [e["entry_id"] for e in seen]
    assert ids == sorted(ids, reverse=True)
    only = http.get("/v1/ledger/statement", params={"customer": customer, "type": "consume"}).json()["items"]
    assert [e["journal_type"] for e in only] == ["consume"]
    future = http.get("/v1/ledger/statement", params={"customer": customer, "since": "2999-01-01T00:00:00Z"})
    assert future.json()["items"] == []
    acct = cash(http, customer)["id"]
    by_account = http.get("/v1/ledger/statement", params={"account": acct, "limit": 500}).json()["items"]
    assert len(by_account) == 6


def test_holds_lots_and_blocks_over_http(http, customer):
    assert http.post("/v1/ledger/recharge", json={"customer": customer, "amount": 1000}, key=ref("k")).ok
    h = http.post("/v1/ledger/freeze", json={"customer": customer, "amount": 100, "reason": "risk"},
                  key=ref("k")).json()["hold"]
    w = http.post("/v1/ledger/withdraw", json={"customer": customer, "amount": 200}, key=ref("k")).json()["hold"]
    held = http.get(f"/v1/ledger/customers/{customer}/holds?state=held").json()["items"]
    assert {x["id"] for x in held} == {h["id"], w["id"]}
    r = http.post("/v1/ledger/release-hold", json={"hold_id": w["id"]}, key=ref("k"))
    assert r.status_code == 201 and r.json()["hold"]["state"] == "released"
    r = http.post("/v1/ledger/release-hold", json={"hold_id": w["id"]}, key=ref("k"))
    assert r.status_code == 409 and r.json()["code"] == "hold-not-held"
    r = http.post("/v1/ledger/unfreeze", json={"hold_id": h["id"], "reason": "cleared"}, key=ref("k"))
    assert r.status_code == 201
    r = http.post("/v1/ledger/grant-lot", json={"customer": customer, "asset": "VOUCHER", "amount": 2000,
                                               "expires_at": "2099-01-01T00:00:00+08:00"}, key=ref("k"))
    assert r.status_code == 201 and r.json()["lot"]["expires_at"] == "2098-12-31T16:00:00Z"
    lots = http.get(f"/v1/ledger/customers/{customer}/lots?asset=VOUCHER").json()["items"]
    assert [(lot["remaining"], lot["expires_at"]) for lot in lots] == [(2000, "2098-12-31T16:00:00Z")]
    r = http.post("/v1/ledger/spend-lot", json={"customer": customer, "asset": "VOUCHER", "amount": 500},
                  key=ref("k"))
    assert r.status_code == 201 and r.json()["lots_used"][0]["amount"] == 500
    r = http.post("/v1/ledger/block", json={"customer": customer, "debit": True, "reason": "kyc"}, key=ref("k"))
    assert r.status_code == 200 and r.json()["account"]["debit_blocked"] is True
    r = http.post("/v1/ledger/consume", json={"customer": customer, "amount": 1}, key=ref("k"))
    assert r.status_code == 409 and r.json()["code"] == "account-blocked"
    assert http.post("/v1/ledger/unblock", json={"customer": customer, "debit": True, "reason": "ok"},
                     key=ref("k")).status_code == 200
    assert http.get(f"/v1/ledger/reconcile?customer={customer}").json()["ok"]


def test_credit_transfer_and_merchant_accounts_over_http(http, customer):
    m = ref("m")
    assert http.post("/v1/ledger/customers", json={"external_ref": m, "kind": "merchant"}).status_code == 201
    assert http.post("/v1/ledger/accounts", json={"customer": m, "account_type": "cash",
                                                  "label": "shop-2"}).status_code == 201
    assert http.post("/v1/ledger/credit-draw", json={"customer": customer, "amount": 800}, key=ref("k")).ok
    r = http.post("/v1/ledger/transfer", json={"from": {"customer": customer},
                                               "to": {"customer": m, "label": "shop-2"}, "amount": 800},
                  key=ref("k"))
    assert r.status_code == 201, r.text
    r = http.post("/v1/ledger/credit-repay", json={"customer": customer, "amount": 1}, key=ref("k"))
    assert r.status_code == 409 and r.json()["code"] == "insufficient-funds"
    r = http.post("/v1/ledger/credit-draw", json={"customer": customer, "amount": 500000}, key=ref("k"))
    assert r.status_code == 409 and r.json()["code"] == "credit-limit-exceeded"


def test_batch_gives_per_item_results_in_one_commit(http, customer):
    ops = [{"op": "recharge", "body": {"customer": customer, "amount": 1000}},
           {"op": "consume", "body": {"customer": customer, "amount": 999999}},
           {"op": "consume", "body": {"customer": customer, "amount": 400}},
           {"op": "consume", "body": {"customer": customer, "amount": 0}},
           {"op": "recharge", "idempotency_key": "own-key-" + customer, "body": {"customer": customer, "amount": 1}}]
    key = ref("batch")
    r = http.post("/v1/ledger/batch", json={"operations": ops}, key=key)
    assert r.status_code == 200, r.text
    out = r.json()
    assert [x["status"] for x in out["results"]] == [201, 409, 201, 422, 201]
    assert (out["succeeded"], out["failed"]) == (3, 2)
    assert out["results"][1]["problem"]["code"] == "insufficient-funds"
    journal = out["results"][2]["result"]["journal"]
    assert "entries" not in journal and len(http.get(f"/v1/ledger/journals/{journal['id']}").json()["entries"]) == 2
    assert cash(http, customer)["sub_accounts"]["available"] == 601
    again = http.post("/v1/ledger/batch", json={"operations": ops}, key=key)
    assert again.json() == out and again.headers.get("Idempotent-Replayed") == "true"
    # the item's own key is shared with the single endpoint
    single = http.post("/v1/ledger/recharge", json={"customer": customer, "amount": 1}, key="own-key-" + customer)
    assert single.headers.get("Idempotent-Replayed") == "true"
    too_many = http.post("/v1/ledger/batch", json={"operations": ops * 201}, key=ref("batch"))
    assert too_many.status_code == 422
    assert cash(http, customer)["sub_accounts"]["available"] == 601


def test_lot_spends_refunds_repayment_and_lot_batches_answer_their_documented_shapes(http, customer):
    """The operations no other test posts over HTTP; tests/conftest.py checks each body against its
    schemas/api/ledger/results/<op>.json (a batch item carries the same parts, its journal without entries)."""
    voucher = http.post("/v1/ledger/grant-lot", json={"customer": customer, "asset": "VOUCHER", "amount": 300},
                        key=ref("k")).json()["lot"]
    r = http.post("/v1/ledger/spend-lots", json={"customer": customer, "asset": "VOUCHER", "amount": 300,
                                                 "lot_ids": [voucher["id"]]}, key=ref("k"))
    assert r.status_code == 201 and r.json()["lots_used"] == [{"lot_id": voucher["id"], "amount": 300,
                                                                "expires_at": None}], r.text
    spend = r.json()["journal"]["id"]
    r = http.post("/v1/ledger/refund-lot-spend", json={"spend_journal_id": spend, "amount": 100}, key=ref("k"))
    assert r.status_code == 201, r.text
    assert r.json()["lot_refund"]["lots"][0]["how"] == "original lot"
    assert r.json()["lot_refund"]["refundable_after"] == 200
    assert http.post("/v1/ledger/credit-draw", json={"customer": customer, "amount": 800}, key=ref("k")).ok
    r = http.post("/v1/ledger/credit-repay", json={"customer": customer, "amount": 300}, key=ref("k"))
    assert r.status_code == 201 and r.json()["operation"] == "credit_repay", r.text
    assert {e["sub"] for e in r.json()["journal"]["entries"]} == {"available", "overdraft"}
    ops = [{"op": "grant_lot", "body": {"customer": customer, "asset": "POINTS", "amount": 50}},
           {"op": "spend_lot", "body": {"customer": customer, "asset": "POINTS", "amount": 20}},
           {"op": "withdraw", "body": {"customer": customer, "amount": 100}},
           {"op": "block", "body": {"customer": customer, "credit": True, "reason": "kyc"}}]
    r = http.post("/v1/ledger/batch", json={"operations": ops}, key=ref("batch"))
    assert r.status_code == 200 and r.json()["failed"] == 0, r.text
    results = [x["result"] for x in r.json()["results"]]
    assert [sorted(x) for x in results] == [["journal", "lot", "operation"], ["journal", "lots_used", "operation"],
                                             ["hold", "journal", "operation"], ["account", "operation"]]
    assert http.post("/v1/ledger/unblock", json={"customer": customer, "credit": True, "reason": "ok"},
                     key=ref("k")).status_code == 200


def test_crash_mid_request_then_retry_with_same_key(http, customer):
    assert http.post("/v1/ledger/recharge", json={"customer": customer, "amount": 500}, key=ref("k")).ok
    key, body = ref("k"), {"customer": customer, "amount": 200}

    with crash_at("after-entries", RuntimeError):
        r = http.post("/v1/ledger/consume", json=body, key=key)
    assert r.status_code == 500 and r.json()["code"] == "internal-error"
    assert cash(http, customer)["sub_accounts"]["available"] == 500
    first = http.post("/v1/ledger/consume", json=body, key=key)
    again = http.post("/v1/ledger/consume", json=body, key=key)
    assert first.status_code == again.status_code == 201 and first.json() == again.json()
    assert cash(http, customer)["sub_accounts"]["available"] == 300


def test_openapi_documents_every_ledger_operation(server):
    doc = Http(server).get("/openapi.json").json()
    for path in ("/v1/ledger/consume", "/v1/ledger/settle-hold", "/v1/ledger/batch", "/v1/ledger/statement"):
        assert path in doc["paths"]
    assert doc["paths"]["/v1/ledger/consume"]["post"]["x-scope"] == "ledger:write"


def test_cli_reconcile_exits_zero_when_clean(database_url):
    env = {**os.environ, "PATRON_DATABASE_URL": database_url}
    out = subprocess.run([sys.executable, "-m", "app.cli", "ledger", "reconcile"], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ok    snapshot_equals_entries" in out.stdout


def test_each_operation_writes_one_audit_row_in_its_own_commit(http, customer):
    """The request's audit row is written inside the operation's transaction: one row per success,
    none for a replay or a refusal, and a batch is one row."""
    def rows(action):
        r = http.get("/v1/audit", params={"action": action, "limit": 1000})
        assert r.status_code == 200, r.text
        return [row for row in r.json()["items"] if (row["after"] or {}).get("journal", {}).get("id") in journals]
    journals = set()
    key = ref("k")
    body = {"customer": customer, "amount": 10}
    r = http.post("/v1/ledger/recharge", json={"customer": customer, "amount": 100}, key=ref("k"))
    assert r.status_code == 201, r.text
    first = http.post("/v1/ledger/consume", json=body, key=key)
    assert first.status_code == 201, first.text
    journals.add(first.json()["journal"]["id"])
    assert http.post("/v1/ledger/consume", json=body, key=key).headers.get("Idempotent-Replayed") == "true"
    refused = http.post("/v1/ledger/consume", json={"customer": customer, "amount": 10**9}, key=ref("k"))
    assert refused.status_code == 409, refused.text
    (row,) = rows("ledger.consume")
    assert row["after"] == {"operation": "consume", "journal": {"id": first.json()["journal"]["id"]}}
    assert row["detail"] == {"status": 201} and row["policy_version"]
    assert row["credential"] and row["credential"].startswith("api_key:")
    before = {r_["id"] for r_ in http.get("/v1/audit", params={"action": "ledger.batch", "limit": 1000}).json()["items"]}
    batch = http.post("/v1/ledger/batch", json={"operations": [{"op": "consume", "body": body}] * 3}, key=ref("b"))
    assert batch.status_code == 200 and batch.json()["succeeded"] == 3, batch.text
    after = http.get("/v1/audit", params={"action": "ledger.batch", "limit": 1000}).json()["items"]
    assert len([r_ for r_ in after if r_["id"] not in before]) == 1
