"""API conventions checked over the whole route table, so a new route cannot forget them."""
import re
import uuid

from tests.conftest import Http, create_staff, make_token

STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}
# Routes whose answer is a one-time secret (never stored for a replay; a retry mints a new one).
NO_REPLAY = {("POST", "/v1/auth/login"), ("POST", "/v1/auth/refresh"), ("POST", "/v1/auth/totp/setup")}


def _operations(app):
    for rule in app.url_map.iter_rules():
        op = getattr(app.view_functions.get(rule.endpoint), "operation", None)
        if op is None:
            continue
        for method in sorted(rule.methods & STATE_CHANGING):
            url = re.sub(r"<int:[^>]+>", "1", rule.rule)
            yield method, re.sub(r"<[^>]+>", "x1", url), op


def test_every_state_changing_route_is_idempotent_or_declared_read_only(app):
    found = list(_operations(app))
    assert found
    for method, url, op in found:
        idem = op["idempotent"]
        if method == "PUT":
            continue  # sets a whole state: idempotent by HTTP semantics
        if idem == "no-replay":  # answers with a one-time secret: only these, each reviewed
            assert (method, url) in NO_REPLAY, f"{method} {url}: 'no-replay' is only for one-time secrets"
            continue
        assert op["readonly"] or idem in (True, "replay") or (isinstance(idem, str) and idem.startswith("body:")), \
            f"{method} {url}: declare idempotent=True/'replay'/'body:<field>' or readonly=True"


def test_every_route_that_takes_the_header_refuses_a_call_without_it(app, server, admin_token):
    http = Http(server, admin_token)
    # routes only a person may take are called by an act-as key naming one who holds every permission
    person = create_staff(http, "cs", ["supervisor", "admin", "knowledge_keeper", "finance_manager"], "conv")
    acting = Http(server, make_token(["admin", "act-as"], name="conventions"))
    acting.session.headers["Patron-Act-As"] = person
    checked = 0
    for method, url, op in _operations(app):
        if op["idempotent"] not in (True, "replay"):
            continue
        caller = acting if op["permission"] and not op["allow_service"] else http
        r = caller.request(method, url, json={}, key=False)
        assert r.status_code == 428, (method, url, r.status_code, r.text[:300])
        assert r.json()["code"] == "idempotency-key-required"
        checked += 1
    assert checked >= 20  # the ledger operations, policy apply, staff, webhooks, tickets...


def test_the_readme_promises_are_among_them(app):
    header = {(m, u) for m, u, op in _operations(app) if op["idempotent"] in (True, "replay")}
    for promised in [("POST", "/v1/policies/apply"), ("POST", "/v1/webhooks"), ("POST", "/v1/staff"),
                     ("POST", "/v1/ledger/customers"), ("POST", "/v1/ledger/recharge"), ("POST", "/v1/tickets")]:
        assert promised in header, promised


def test_replayed_call_returns_the_stored_answer(http):
    key = "test-" + uuid.uuid4().hex
    ref = "conv-" + uuid.uuid4().hex[:10]
    first = http.post("/v1/ledger/customers", json={"external_ref": ref}, key=key)
    assert first.status_code == 201, first.text
    again = http.post("/v1/ledger/customers", json={"external_ref": ref}, key=key)
    assert again.status_code == 201 and again.json() == first.json()
    assert again.headers.get("Idempotent-Replayed") == "true"
    other = http.post("/v1/ledger/customers", json={"external_ref": ref + "x"}, key=key)
    assert other.status_code == 409 and other.json()["code"] == "idempotency-key-reused"


def test_policy_apply_takes_if_match_and_answers_412_on_a_stale_version(http):
    active = http.get("/v1/policies/active")
    etag = active.headers["ETag"]
    assert etag == f'"{active.json()["version"]}"'
    ok = http.post("/v1/policies/apply", json={"note": "same set"}, key="t-" + uuid.uuid4().hex,
                   headers={"If-Match": etag})
    assert ok.status_code == 200, ok.text
    assert ok.headers["ETag"] == etag
    stale = http.post("/v1/policies/apply", json={"note": "stale"}, key="t-" + uuid.uuid4().hex,
                      headers={"If-Match": '"0000000000000000"'})
    assert stale.status_code == 412, stale.text
    assert stale.json()["code"] == "precondition-failed" and stale.json()["active"] == active.json()["version"]
