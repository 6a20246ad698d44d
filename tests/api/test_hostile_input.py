"""Hostile and malformed input over HTTP: strict JSON, text both engines store, integer amounts, limits."""
import http.client
import json
import secrets
from urllib.parse import urlsplit

import pytest

from tests.ledger_factories import ref


def _raw(server, method, path, body, headers):
    """Send exact bytes (requests would re-encode the JSON)."""
    u = urlsplit(server)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"null")
    finally:
        conn.close()


@pytest.fixture()
def auth(admin_token):
    return {"Authorization": f"Bearer {admin_token}", "Content-Type": "application/json"}


@pytest.fixture()
def customer(http):
    cref = ref("hx")
    assert http.post("/v1/ledger/customers", json={"external_ref": cref}).status_code == 201
    return cref


@pytest.mark.parametrize("literal", ["100.0", "1e2", "99.99999999999999999", "1E+2", "100.00000000000000001"])
def test_amounts_must_be_written_as_integers(server, auth, customer, http, literal):
    body = f'{{"customer": "{customer}", "amount": {literal}}}'.encode()
    status, problem = _raw(server, "POST", "/v1/ledger/recharge", body, dict(auth, **{"Idempotency-Key": ref("k")}))
    assert status == 422 and problem["code"] == "validation-failed", problem
    assert [e["pointer"] for e in problem["errors"]] == ["/amount"]
    cash = next(a for a in http.get(f"/v1/ledger/customers/{customer}/balances").json()["accounts"]
                if a["account_type"] == "cash")
    assert cash["sub_accounts"]["available"] == 0  # nothing was credited
    body = f'{{"customer": "{customer}", "amount": 100}}'.encode()
    status, _ = _raw(server, "POST", "/v1/ledger/recharge", body, dict(auth, **{"Idempotency-Key": ref("k")}))
    assert status == 201


def test_duplicate_keys_are_refused(server, auth, customer):
    body = f'{{"customer": "{customer}", "amount": 1, "amount": 100000}}'.encode()
    status, problem = _raw(server, "POST", "/v1/ledger/recharge", body, dict(auth, **{"Idempotency-Key": ref("k")}))
    assert status == 400 and problem["code"] == "duplicate-key" and "'amount'" in problem["detail"]
    nested = b'{"name": "n", "url": "https://example.com/h", "topics": "a", "topics": "b"}'
    status, problem = _raw(server, "POST", "/v1/webhooks", nested, dict(auth, **{"Idempotency-Key": ref("k")}))
    assert status == 400 and problem["code"] == "duplicate-key"


def test_chunked_body_over_the_limit_is_413(server, auth, app):
    limit = app.config["MAX_CONTENT_LENGTH"]
    chunk = b'{"files": {"policies/a.yaml": "' + b"x" * (limit + 10) + b'"}}'

    def chunks():
        for i in range(0, len(chunk), 65536):
            yield chunk[i:i + 65536]
    import requests
    r = requests.post(server + "/v1/policies/validate", data=chunks(), headers=auth, timeout=60)
    assert "Content-Length" not in r.request.headers and r.request.headers.get("Transfer-Encoding") == "chunked"
    assert r.status_code == 413 and r.json()["code"] == "payload-too-large"


BAD_TEXT = ["a\u0000b", "\ud800", "x\udfffy"]


@pytest.mark.parametrize("text", BAD_TEXT)
def test_nul_and_lone_surrogates_are_422_in_every_text_field(server, auth, http, text):
    # json.dumps writes \u0000 and \ud800 as escapes: exactly what a client would send
    cases = [
        ("/v1/staff", {"staff_no": "s-" + secrets.token_hex(4), "name": text, "department": "cs",
                       "roles": ["agent_l1"]}, "/name"),
        ("/v1/tickets", {"category": "退款争议", "title": text, "body": "b", "user_id": ref("u"), "channel": "app"},
         "/title"),
        ("/v1/tickets", {"category": "退款争议", "title": "t", "body": text, "user_id": ref("u"), "channel": "app"},
         "/body"),
        ("/v1/webhooks", {"name": text, "url": "https://example.com/h"}, "/name"),
        ("/v1/policies/apply", {"note": text}, "/note"),
    ]
    for path, body, pointer in cases:
        status, problem = _raw(server, "POST", path, json.dumps(body).encode(),
                               dict(auth, **{"Idempotency-Key": ref("k")}))
        assert status == 422, (path, problem)
        assert problem["code"] == "validation-failed" and pointer in [e["pointer"] for e in problem["errors"]], problem


def test_balance_limit_is_a_documented_422_not_an_overflow(http, customer):
    from app.services.ledger.core import MAX_BALANCE_MINOR
    big = 2**53
    r = http.post("/v1/ledger/recharge", json={"customer": customer, "amount": big}, key=ref("k"))
    assert r.status_code == 201, r.text
    r = http.post("/v1/ledger/recharge", json={"customer": customer, "amount": 1}, key=ref("k"))
    assert r.status_code == 422 and r.json()["code"] == "balance-limit-exceeded", r.text
    assert r.json()["limit"] == MAX_BALANCE_MINOR == 2**53
    cash = next(a for a in http.get(f"/v1/ledger/customers/{customer}/balances").json()["accounts"]
                if a["account_type"] == "cash")
    assert cash["sub_accounts"]["available"] == big
