"""One idempotency contract over HTTP: business refusals are stored and replayed; validation, 404s are not."""
import pytest

from app.services import ledger
from tests.ledger_factories import ref


@pytest.fixture()
def customer(http):
    cref = ref("idem")
    assert http.post("/v1/ledger/customers", json={"external_ref": cref}).status_code == 201
    return cref


def _available(http, cref):
    accounts = http.get(f"/v1/ledger/customers/{cref}/balances").json()["accounts"]
    return next(a for a in accounts if a["account_type"] == "cash")["sub_accounts"]["available"]


def test_declined_consume_replays_the_same_refusal_after_a_recharge(http, customer):
    key = ref("k")
    body = {"customer": customer, "amount": 6000, "external_ref": ref("order")}  # overdraft limit is 5000
    first = http.post("/v1/ledger/consume", json=body, key=key)
    assert first.status_code == 409 and first.json()["code"] == "insufficient-funds", first.text
    assert first.headers.get("Idempotent-Replayed") is None
    assert http.post("/v1/ledger/recharge", json={"customer": customer, "amount": 7000}, key=ref("k")).status_code == 201
    late = http.post("/v1/ledger/consume", json=body, key=key)
    assert late.status_code == 409, late.text
    assert late.json() == first.json()
    assert late.headers.get("Idempotent-Replayed") == "true"
    assert late.headers["Content-Type"].startswith("application/problem+json")
    assert _available(http, customer) == 7000  # the late retry moved nothing
    other = http.post("/v1/ledger/consume", json={**body, "amount": 400}, key=key)
    assert other.status_code == 409 and other.json()["code"] == "idempotency-key-reused"
    fresh = http.post("/v1/ledger/consume", json=body, key=ref("k"))
    assert fresh.status_code == 201 and _available(http, customer) == 1000


def test_refused_settle_of_a_resolved_hold_is_replayed(http, customer):
    http.post("/v1/ledger/recharge", json={"customer": customer, "amount": 1000}, key=ref("k"))
    hold = http.post("/v1/ledger/withdraw", json={"customer": customer, "amount": 300}, key=ref("k")).json()["hold"]
    assert http.post("/v1/ledger/release-hold", json={"hold_id": hold["id"]}, key=ref("k")).status_code == 201
    key = ref("k")
    first = http.post("/v1/ledger/settle-hold", json={"hold_id": hold["id"]}, key=key)
    assert first.status_code == 409 and first.json()["code"] == "hold-not-held"
    again = http.post("/v1/ledger/settle-hold", json={"hold_id": hold["id"]}, key=key)
    assert again.json() == first.json() and again.headers.get("Idempotent-Replayed") == "true"


def test_credit_limit_refusal_is_stored(http):
    cref = ref("cred")
    assert http.post("/v1/ledger/customers", json={"external_ref": cref, "kind": "user"}).status_code == 201
    accounts = http.get(f"/v1/ledger/customers/{cref}/balances").json()["accounts"]
    if not any(a["account_type"] == "credit" for a in accounts):
        pytest.fail("the sample ledger policy gives users a credit account")
    key = ref("k")
    body = {"customer": cref, "amount": 10 ** 12}
    first = http.post("/v1/ledger/credit-draw", json=body, key=key)
    assert first.status_code == 409 and first.json()["code"] == "credit-limit-exceeded", first.text
    again = http.post("/v1/ledger/credit-draw", json=body, key=key)
    assert again.json() == first.json() and again.headers.get("Idempotent-Replayed") == "true"


def test_validation_errors_inside_an_operation_are_not_stored(http, customer):
    key = ref("k")
    bad = {"customer": customer, "asset": "POINTS", "amount": 10, "expires_at": "not-a-time"}
    first = http.post("/v1/ledger/grant-lot", json=bad, key=key)
    assert first.status_code == 422 and first.json()["code"] == "validation-failed", first.text
    good = {**bad, "expires_at": "2099-01-01T00:00:00Z"}
    second = http.post("/v1/ledger/grant-lot", json=good, key=key)  # same key, corrected body: runs
    assert second.status_code == 201, second.text


def test_not_found_is_not_stored_so_a_retry_after_creating_it_runs(http):
    cref, key = ref("later"), ref("k")
    body = {"customer": cref, "amount": 100}
    assert http.post("/v1/ledger/recharge", json=body, key=key).status_code == 404
    assert http.post("/v1/ledger/customers", json={"external_ref": cref}).status_code == 201
    r = http.post("/v1/ledger/recharge", json=body, key=key)
    assert r.status_code == 201 and r.headers.get("Idempotent-Replayed") is None


def test_a_new_field_in_the_consume_result_is_stored_and_replayed_on_both_engines(app, http, customer, monkeypatch):
    """One posting path and one record writer: the result stored is the result returned (the old
    PostgreSQL path wrote a second copy of the result with the journal and 500ed when they differed)."""
    original = ledger.OPERATIONS["consume"]
    # a real new field is documented in schemas/api/ledger/results/consume.json; this one only lives here
    monkeypatch.setitem(app.view_functions["ledger.op_consume"].operation, "response", None)

    def consume_with_extra_field(ctx, body):
        out = original(ctx, body)
        out["consume"] = {**out["consume"], "note": "new field"}
        return out

    monkeypatch.setitem(ledger.OPERATIONS, "consume", consume_with_extra_field)
    http.post("/v1/ledger/recharge", json={"customer": customer, "amount": 1000}, key=ref("k"))
    key, body = ref("k"), {"customer": customer, "amount": 100}
    first = http.post("/v1/ledger/consume", json=body, key=key)
    assert first.status_code == 201, first.text
    assert first.json()["consume"]["note"] == "new field"
    again = http.post("/v1/ledger/consume", json=body, key=key)
    assert again.json() == first.json() and again.headers.get("Idempotent-Replayed") == "true"


def test_refusal_inside_a_callers_savepoint_is_forgotten_with_it(app, db_conn):
    """Inside a caller's transaction the record stands or falls with the caller (membership retries
    a declined plan charge later under the same key after rolling its savepoint back)."""
    from app.db import db, transactional
    from app.errors import Problem
    from tests.ledger_factories import new_customer
    cref, key = new_customer("sp"), ref("k")
    body = {"customer": cref, "amount": 5050}  # 50 over the overdraft limit

    @transactional()
    def attempt():
        with pytest.raises(Problem):
            with db.atomic():
                ledger.apply_operation("consume", body, "test", idempotency_key=key)

    attempt()
    ledger.apply_operation("recharge", {"customer": cref, "amount": 100}, "test")
    result = ledger.apply_operation("consume", body, "test", idempotency_key=key)
    assert result["consume"]["amount"] == 5050


def test_ticket_transition_refusal_is_replayed(http):
    r = http.post("/v1/tickets", json={"title": "退款金额不对", "body": "订单退款少退了", "category": "退款争议",
                                       "user_id": ref("u")}, key=ref("k"))
    assert r.status_code == 201, r.text
    tid = r.json()["id"]
    key = ref("k")
    first = http.post(f"/v1/tickets/{tid}/transitions", json={"transition": "no_such_transition"}, key=key)
    assert first.status_code == 409 and first.json()["code"] == "transition-not-allowed", first.text
    again = http.post(f"/v1/tickets/{tid}/transitions", json={"transition": "no_such_transition"}, key=key)
    assert again.json() == first.json() and again.headers.get("Idempotent-Replayed") == "true"
