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
        if method == "PUT" or idem == "state":
            continue  # sets a whole state: idempotent by HTTP semantics (a POST that sets the caller's state too)
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


# ---- pagination: one style (cursor + bounded limit, answer {"items": [...], "next_cursor": ...}) ----------
# Every list route declares PAGE (app.api.page_query) and answers app.api.page(...): no exemptions.
# Small catalogues answered whole (bounded by the policy files, not by data): no paging.
CATALOGUES = {"/v1/departments", "/v1/ticket-workflows",
              "/v1/mall/items",  # the mall's items are the mall policy's; stock and eligibility ride along
              "/v1/service/shop/promotions",  # the shop's current promotions, as its connector answers them
              "/v1/service/rosters"}  # one weekly pattern per agent and skill group
# Ranked "top N" answers (search, suggestions): a bounded limit, no further pages.
RANKED = {"/v1/knowledge/search", "/v1/knowledge/suggestions",
          "/v1/service/shop/users/<user_id>/orders"}  # the shop's most recent orders, as its connector answers
# Reports over a bounded date range (each route caps the range it accepts), answered whole: no paging.
REPORTS = {"/v1/service/stats", "/v1/service/qa/summary", "/v1/service/shifts", "/v1/service/attendance",
           "/v1/service/capacity-forecast", "/v1/service/shift-exceptions",
           # one business day, one row per (agent, reason): bounded by the staff and the policy's reasons, and
           # its CSV is the finance export of that day, which must be whole
           "/v1/service/compensations/report",
           # one shadow's differences grouped per (kind, rule): bounded by the policy's rules, not by the events
           "/v1/simulations/shadow"}
PAGING_WORDS = {"cursor", "limit", "after", "before", "offset", "page"}


def _gets(app):
    for rule in app.url_map.iter_rules():
        op = getattr(app.view_functions.get(rule.endpoint), "operation", None)
        if op is not None and "GET" in rule.methods:
            yield rule, op


def _paged(op):
    query = op["query"]
    limit = (query.get("limit") or {}).get("schema", {})
    return ("cursor" in query and limit.get("type") == "integer" and limit.get("minimum", 0) >= 1
            and limit.get("maximum", 10**9) <= 1000 and "default" in limit)


def _streams(app):
    return {rule.rule for rule, op in _gets(app) if "text/event-stream" in op["content"]}


def test_a_stream_resumes_and_its_polling_fallback_pages_like_a_list(app):
    """A Server-Sent Events stream is not a list: it never ends, takes no limit and resumes from Last-Event-ID
    (or ``cursor``, the same value, on a first connect, since EventSource cannot set a header). Its polling
    fallback (the sibling ``.../events``) is a feed: cursor + bounded limit, items + next_cursor."""
    streams = _streams(app)
    assert len(streams) >= 3
    fallbacks = 0
    for rule, op in _gets(app):
        if rule.rule in streams:
            words = PAGING_WORDS & set(op["query"])
            assert words <= {"cursor"}, f"GET {rule.rule}: a stream resumes from cursor/Last-Event-ID, no {words}"
        elif rule.rule.endswith("/events") and rule.rule[:-len("/events")] + "/stream" in streams:
            assert _paged(op), f"GET {rule.rule}: the polling fallback of a stream pages (app.api.PAGE)"
            assert op["response"], f"GET {rule.rule}: declare the page's schema"
            fallbacks += 1
    assert fallbacks >= 2  # a conversation's events, an agent's events


def test_every_list_route_pages_with_cursor_and_bounded_limit(app, http):
    checked, offenders = 0, []
    streams = _streams(app)
    for rule, op in _gets(app):
        url = rule.rule
        words = PAGING_WORDS & set(op["query"])
        if url in RANKED:
            limit = op["query"]["limit"]["schema"]
            assert limit.get("maximum", 10**9) <= 1000, url
            continue
        if url in streams:
            continue  # a stream never ends: not a list (the test above)
        if words:
            assert _paged(op) and words <= {"cursor", "limit"}, \
                f"GET {url}: page with cursor + a bounded limit (app.api.PAGE), not {sorted(words)}"
        if rule.arguments or op["public"] or url in CATALOGUES | REPORTS:
            continue
        r = http.get(url)
        if r.status_code != 200 or not r.headers.get("Content-Type", "").startswith("application/json"):
            continue
        body = r.json()
        is_list = isinstance(body, list) or (isinstance(body, dict) and isinstance(body.get("items"), list))
        if is_list:
            if not _paged(op):
                offenders.append(f"GET {url} answers a list: declare app.api.PAGE and answer app.api.page(...)")
            elif not (isinstance(body, dict) and set(body) == {"items", "next_cursor"}):
                offenders.append(f"GET {url}: answer exactly items + next_cursor (app.api.page), not {sorted(body)}")
            checked += 1
    assert not offenders, "\n".join(offenders)
    assert checked >= 8  # tickets, audit, staff, complaints, policy versions and activations, deliveries...


def test_a_cursor_walks_every_row_once(http):
    refs = []
    for i in range(3):
        r = http.post("/v1/tickets", json={"user_id": f"page-{uuid.uuid4().hex[:8]}", "category": "物流/配送",
                                           "title": f"paging {i}", "channel": "app"}, key="t-" + uuid.uuid4().hex)
        assert r.status_code == 201, r.text
        refs.append(r.json()["id"])
    seen, cursor = [], None
    for _ in range(100):
        r = http.get("/v1/tickets", params={"limit": 1, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200, r.text
        page = r.json()
        assert len(page["items"]) <= 1
        seen += [t["id"] for t in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) and set(refs) <= set(seen)
    assert http.get("/v1/tickets", params={"limit": 1001}).status_code == 422


# Query a CSV export needs besides format=csv (a new export with required parameters adds a line).
CSV_QUERY = {"/v1/member-kpis": {"from": "2026-01", "to": "2026-02"}}


def test_every_csv_export_starts_with_the_utf8_bom_and_is_documented(app, http):
    checked = 0
    for rule, op in _gets(app):
        fmt = op["query"].get("format")
        if not fmt or rule.arguments:
            continue
        assert "csv" in fmt["schema"].get("enum", []), f"GET {rule.rule}: format is an enum naming csv"
        assert "text/csv" in op["content"], f"GET {rule.rule}: document content={{'text/csv': ...}}"
        r = http.get(rule.rule, params={"format": "csv", **CSV_QUERY.get(rule.rule, {})})
        assert r.status_code == 200, (rule.rule, r.text[:300])
        assert r.headers["Content-Type"].startswith("text/csv"), rule.rule
        assert r.content.startswith(b"\xef\xbb\xbf"), f"GET {rule.rule}: CSV without the UTF-8 BOM"
        checked += 1
    assert checked >= 4
