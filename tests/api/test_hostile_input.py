"""Hostile and malformed input over HTTP: strict JSON, text both engines store, integer amounts, limits."""
import http.client
import json
import re
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


def _is_int(rule, arg):
    return type(rule._converters[arg]).__name__ in ("IntegerConverter", "Int64Converter")


def _routes(app):
    """Every (method, path) the app serves, path arguments filled with harmless values (int 1, else "x")."""
    out = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        args = {a: 1 if _is_int(rule, a) else "x" for a in rule.arguments}
        path = rule.build(args, append_unknown=False)[1]
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            out.append((method, path, rule))
    return out


def _raw_head(server, method, path, extra_header=b""):
    """One request with exact bytes on the wire (http.client refuses control characters in headers)."""
    import socket
    u = urlsplit(server)
    with socket.create_connection((u.hostname, u.port), timeout=30) as s:
        s.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n".encode()
                  + extra_header + b"\r\n")
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    return int(data.split(b" ", 2)[1])


def _code(r):
    """The problem code of an answer: the JSON problem's, or the web workspace's error page's (data-code)."""
    if r.headers.get("Content-Type", "").startswith("text/html"):
        m = re.search(r'data-code="([^"]+)"', r.text)
        return m and m.group(1)
    return r.json().get("code")


def test_control_characters_in_query_path_and_headers_are_422_on_every_route(app, server, admin_token):
    """Hardening #9 item 8 beyond bodies: on every route and method, a query parameter (name or value), a path
    segment or a header holding NUL or another control character is a 422 ``validation-failed`` naming it, before
    authentication or the database, as in a body — never a 500 (PostgreSQL refuses NUL), never accepted."""
    import requests
    routes = _routes(app)
    assert len(routes) > 100
    bad = []
    auth = {"Authorization": f"Bearer {admin_token}"}
    for method, path, rule in routes:
        for params in ({"q": "a\x00b"}, {"at\x01": "1"}, {"q": "line\nbreak"}):
            r = requests.request(method, server + path, params=params, headers=auth, timeout=30, stream=True)
            try:
                if r.status_code != 422 or _code(r) != "validation-failed":
                    bad.append((method, path, params, r.status_code))
            finally:
                r.close()
        for arg in [a for a in rule.arguments if not _is_int(rule, a)]:
            seg = path.split("/")
            for i, part in enumerate(rule.rule.split("/")):
                if part == f"<{arg}>" or part.endswith(f":{arg}>"):
                    seg[i] = "a%00b"
            r = requests.request(method, server + "/".join(seg), headers=auth, timeout=30, stream=True)
            try:
                if r.status_code != 422:
                    bad.append((method, "/".join(seg), "path", r.status_code))
            finally:
                r.close()
        status = _raw_head(server, method, path, b"Idempotency-Key: a\x01b\r\n")
        if status != 422:
            bad.append((method, path, "header", status))
    assert bad == []
    r = requests.get(server + "/v1/tickets", params={"q": "a\x00b"}, headers=auth, timeout=30)
    assert [e["pointer"] for e in r.json()["errors"]] == ["/query/q"], r.text
