"""Fuzz every operation with a request body, found in /openapi.json: bad input is a 4xx problem, never a 5xx.

What schemathesis cannot send is here: malformed JSON, wrong content types, huge and deep bodies, odd path
ids. Bodies drawn from each operation's schema are schemathesis' job (tests/api/test_openapi.py).
"""
import json
import uuid

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from referencing import Registry
from referencing.jsonschema import DRAFT202012

BAD_JSON = [b'{"a":', b"{", b"nul", b"\xff\xfe\x00", b'{"a": 1,}', b"[1, 2", b'"unterminated', b"{'a': 1}",
            b'{"a": NaN}', b'{"a": Infinity}', b'{"a": -Infinity}', b'{"a": 1e400}', b"\x00",
            b'{"a": "\\ud800"}', "{\"名\": \"值\"".encode()]
ODD_VALUES = ["", "x" * 5000, "\u0000💥名", -1, 0, 1.5, 10**30, -(2**63), 1e308, True, None, [], {},
              [None], {"": None}, "2026-13-45"]
TOP_LEVEL = [None, True, 0, -1, 1.5, "", "x", [], [{}], [1, 2, 3], {}]


def _operations(doc):
    ops = []
    for path, item in sorted(doc["paths"].items()):
        for method, op in sorted(item.items()):
            if "requestBody" not in op:
                continue
            ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            schema = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]
            url = path
            for p in op.get("parameters", []):
                if p["in"] == "path":
                    value = "1" if p["schema"].get("type") == "integer" else "fuzz-x"
                    url = url.replace("{" + p["name"] + "}", value)
            ops.append({"id": op["operationId"], "method": method.upper(), "url": url, "schema": schema,
                        "idempotent": any(p["name"] == "Idempotency-Key" for p in op.get("parameters", []))})
    return ops


@pytest.fixture(scope="module")
def doc(server):
    r = requests.get(server + "/openapi.json", timeout=30)
    assert r.status_code == 200
    return r.json()


@pytest.fixture(scope="module")
def operations(doc):
    ops = _operations(doc)
    assert ops, "no operation with a request body in /openapi.json"
    return ops


def _properties(schema, doc):
    """Top-level property names of a body schema (following one $ref / allOf level)."""
    # the document is bundled: every $ref is "#/components/schemas/..." inside it
    registry = Registry().with_resource("urn:openapi", DRAFT202012.create_resource(doc))
    names = set()

    def visit(node, base, depth=0):
        if not isinstance(node, dict) or depth > 5:
            return
        if "$ref" in node:
            resolved = registry.resolver(base).lookup(node["$ref"])
            visit(resolved.contents, resolved.resolver._base_uri, depth + 1)
        names.update(node.get("properties", {}))
        for key in ("allOf", "anyOf", "oneOf"):
            for sub in node.get(key, []):
                visit(sub, base, depth + 1)

    visit(schema, "urn:openapi")
    return sorted(names)


def _active_version(server, session):
    r = session.get(server + "/v1/policies/active", timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["version"]


@pytest.fixture(scope="module", autouse=True)
def policy_guard(server, session):
    """The active policy set before fuzzing; restored (and reported) if a fuzzed body replaced it.

    Every other test in the session relies on the sample policy set being active, so a body the
    API wrongly accepts must not take the whole suite down with it.
    """
    _GUARD["version"] = _active_version(server, session)
    yield _GUARD
    if _active_version(server, session) != _GUARD["version"]:
        _restore(server, session)


def _restore(server, session):
    r = session.post(server + "/v1/policies/apply", json={}, timeout=60,
                     headers={"Idempotency-Key": "fuzz-restore-" + uuid.uuid4().hex})
    assert r.status_code == 200, r.text


_GUARD = {}


def _send(server, session, op, body=None, raw=None, content_type="application/json"):
    headers = {"Content-Type": content_type} if content_type else {}
    if op["idempotent"]:
        headers["Idempotency-Key"] = "fuzz-" + uuid.uuid4().hex
    data = raw if raw is not None else json.dumps(body).encode()
    r = session.request(op["method"], server + op["url"], data=data, headers=headers, timeout=30)
    if r.status_code < 300 and op["url"].startswith("/v1/policies/"):
        baseline = _GUARD.get("version")
        now = _active_version(server, session)
        if baseline and now != baseline:
            _restore(server, session)
            pytest.fail(f"{op['method']} {op['url']} accepted {data[:200]!r} ({r.status_code}) and replaced "
                        f"the active policy set {baseline} with {now}; a bad set must be refused "
                        f"(the sample set was re-applied)")
    return r


def _assert_problem(r, op, what):
    where = f"{op['method']} {op['url']} ({op['id']}) with {what}: {r.status_code} {r.text[:300]}"
    assert r.status_code < 500, where
    if r.status_code >= 400:
        assert r.headers["Content-Type"].startswith("application/problem+json"), where
        body = r.json()
        assert body["status"] == r.status_code and body["code"] and body["title"], where
        if body["code"] == "validation-failed":
            assert r.status_code == 422 and body["errors"] and all("pointer" in e and "message" in e for e in body["errors"]), where


@pytest.fixture(scope="module")
def session(server, admin_token):
    """An admin key acting for a staff member who holds every role, so routes taken by a person get as far
    as reading the body (a key acting for nobody is refused there before the body is read)."""
    from tests.conftest import Http, create_staff, make_token
    from app.platform import auth
    roles = sorted(auth.access_view()._roles)
    staff_no = create_staff(Http(server, admin_token), "cs", roles, prefix="fuzz")
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {make_token(['admin', 'act-as'], name='fuzz')}"
    s.headers["Patron-Act-As"] = staff_no
    return s


def test_fuzz_malformed_json_and_wrong_content_types(server, session, operations):
    for op in operations:
        for raw in BAD_JSON:
            r = _send(server, session, op, raw=raw)
            _assert_problem(r, op, f"raw {raw[:20]!r}")
            assert r.status_code in (400, 422), (op["id"], raw, r.status_code, r.text[:200])
        for ct in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                   "application/xml", None):
            r = _send(server, session, op, raw=b'{"a": 1}', content_type=ct)
            _assert_problem(r, op, f"content type {ct}")
            assert r.status_code == 415, (op["id"], ct, r.status_code)
        r = _send(server, session, op, raw=b"")
        _assert_problem(r, op, "empty body")
        assert r.status_code == 400, (op["id"], r.status_code, r.text[:200])


def test_fuzz_wrong_top_level_types_nesting_and_size(server, session, operations):
    deep = {"a": 1}
    for _ in range(200):
        deep = {"a": [deep]}
    for op in operations:
        for value in TOP_LEVEL:
            _assert_problem(_send(server, session, op, value), op, f"top-level {value!r}")
        _assert_problem(_send(server, session, op, raw=b"[" * 100000 + b"]" * 100000), op, "100k nesting")
        _assert_problem(_send(server, session, op, deep), op, "deep object")
        r = _send(server, session, op, raw=b'{"a": "' + b"x" * (2 * 1024 * 1024) + b'"}')
        _assert_problem(r, op, "2 MB body")
        assert r.status_code == 413
        _assert_problem(_send(server, session, op, [{}] * 5000), op, "long array")


def test_fuzz_every_field_with_wrong_types_and_unknown_fields(server, session, operations, doc):
    for op in operations:
        names = _properties(op["schema"], doc)
        for value in ODD_VALUES:  # every field wrong at once: each must be reported, none may crash
            _assert_problem(_send(server, session, op, {n: value for n in names}), op, f"all fields = {value!r:.40}")
        for name in names:
            for value in (None, 10**30, {}, 2**40):
                _assert_problem(_send(server, session, op, {name: value}), op, f"{{{name!r}: {value!r:.40}}}")
        r = _send(server, session, op, {"__unknown_field__": 1, **{n: None for n in names}})
        _assert_problem(r, op, "unknown field + nulls")
        assert 400 <= r.status_code < 500


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=15)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_fuzz_random_bodies(server, session, operations, doc, data):
    op = data.draw(st.sampled_from(operations))
    names = _properties(op["schema"], doc)
    keys = st.sampled_from(names) | st.text(max_size=8) if names else st.text(max_size=8)
    body = data.draw(st.one_of(json_values, st.dictionaries(keys, json_values, max_size=6)))
    _assert_problem(_send(server, session, op, body), op, f"{body!r:.200}")


ODD_PARAMS = ["-1", "0", "abc", "9" * 30, "1e9", "' OR 1=1 --", "名字", "x" * 300, "%00", "null", "[]"]
ODD_PATH = ["0", "2147483648", "9223372036854775807", "9" * 25, "x" * 300, "名字", "%20", "-1", "'", "..%2F"]


def test_fuzz_query_and_path_parameters(server, session, doc):
    """Odd query values and path ids (huge integers, long or odd strings) on every operation."""
    import re as _re
    seen = 0
    for path, item in sorted(doc["paths"].items()):
        for method, op in sorted(item.items()):
            params = op.get("parameters", [])
            query = [p["name"] for p in params if p["in"] == "query"]
            names = [p["name"] for p in params if p["in"] == "path"]
            headers = {"Idempotency-Key": "fuzz-" + uuid.uuid4().hex} if any(
                p["name"] == "Idempotency-Key" for p in params) else {}
            kw = {"json": {}} if "requestBody" in op else {}
            fake = {"method": method.upper(), "url": path, "id": op["operationId"]}
            for value in ODD_PATH if names else []:
                url = _re.sub(r"{[^}]+}", value, path)
                r = session.request(method.upper(), server + url, headers=headers, timeout=30, **kw)
                _assert_problem(r, {**fake, "url": url}, f"path value {value!r:.40}")
                seen += 1
            if method != "get" or names:
                continue
            # a stream that opens never ends: its status is the answer, the body is not read
            sse = any("text/event-stream" in (resp.get("content") or {}) for resp in op["responses"].values())
            for name in query:
                for value in ODD_PARAMS:
                    r = session.get(server + path, params={name: value}, timeout=30, stream=sse)
                    if sse and r.status_code == 200:
                        assert r.headers["Content-Type"].startswith("text/event-stream"), (path, name, value)
                        r.close()
                    else:
                        _assert_problem(r, fake, f"?{name}={value!r:.40}")
                    seen += 1
    assert seen
