"""App factory, config, storage, errors as problem+json, OpenAPI, authentication and ops, over real HTTP."""
import re
import uuid

import pytest
import requests

from tests.conftest import BACKEND, Http, make_token


# --- ops -------------------------------------------------------------------------------------

def test_healthz_is_public(server):
    r = Http(server).get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_readyz_reports_database(server):
    r = Http(server).get("/readyz")
    assert r.status_code == 200
    assert r.json()["checks"]["database"] == "ok"
    assert "redis" not in r.json()["checks"]  # not configured: not checked


def test_readyz_checks_real_redis_when_configured(app, server, redis_url, monkeypatch):
    monkeypatch.setitem(app.config, "REDIS_URL", redis_url)
    r = Http(server).get("/readyz")
    assert r.status_code == 200 and r.json()["checks"]["redis"] == "ok"
    monkeypatch.setitem(app.config, "REDIS_URL", "redis://127.0.0.1:1/0")  # nothing listens there
    r = Http(server).get("/readyz")
    assert r.status_code == 503 and r.headers["Content-Type"].startswith("application/problem+json")
    body = r.json()
    assert body["code"] == "not-ready" and body["checks"]["redis"].startswith("error")
    assert body["checks"]["database"] == "ok"


def test_metrics_is_prometheus_text(server):
    from prometheus_client.parser import text_string_to_metric_families
    Http(server).get("/healthz")
    Http(server).get("/no/such/route")
    r = Http(server).get("/metrics")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    assert "patron_http_requests" in families and "patron_http_request_seconds" in families
    samples = families["patron_http_requests"].samples
    assert any(s.labels["route"] == "/healthz" and s.labels["status"] == "200" and s.value >= 1 for s in samples)
    # unmatched paths share one label value, so scanners cannot blow up the series count
    assert not any("/no/such/route" in s.labels["route"] for s in samples)
    assert any(s.labels["route"] == "unmatched" for s in samples)


def test_request_id_is_echoed_generated_and_logged(server, caplog):
    import logging
    caplog.set_level(logging.INFO, logger="patron.http")
    rid = "req-" + uuid.uuid4().hex
    r = requests.get(server + "/healthz", headers={"X-Request-Id": rid}, timeout=10)
    assert r.headers["X-Request-Id"] == rid
    generated = requests.get(server + "/healthz", timeout=10).headers["X-Request-Id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    # a hostile id (log/header injection, or huge) is replaced, never echoed
    bad = requests.get(server + "/healthz", headers={"X-Request-Id": "x" * 500}, timeout=10)
    assert re.fullmatch(r"[0-9a-f]{32}", bad.headers["X-Request-Id"])
    assert Http(server).get("/nope", headers={"X-Request-Id": rid}).headers["X-Request-Id"] == rid
    records = [rec for rec in caplog.records if getattr(rec, "request_id", None) == rid]
    assert records and records[0].status == 200 and records[0].path == "/healthz"


def test_logs_are_json_lines_with_request_id():
    import json
    import logging

    from app.logs import JsonFormatter
    rec = logging.LogRecord("patron.http", logging.INFO, __file__, 1, "GET %s 200", ("/x",), None)
    rec.request_id, rec.status = "abc", 200
    line = json.loads(JsonFormatter().format(rec))
    assert line["msg"] == "GET /x 200" and line["request_id"] == "abc" and line["level"] == "INFO"


# --- errors ----------------------------------------------------------------------------------

def _problem(r, status, code):
    assert r.status_code == status, r.text
    assert r.headers["Content-Type"].startswith("application/problem+json")
    body = r.json()
    assert body["status"] == status and body["code"] == code and body["title"]
    assert body["type"].endswith(code)
    return body


def test_unknown_route_is_problem(server):
    _problem(Http(server).get("/nope"), 404, "not-found")


def test_wrong_method_is_405_problem_with_allow(server):
    r = Http(server).request("DELETE", "/healthz")
    _problem(r, 405, "method-not-allowed")
    assert "GET" in r.headers["Allow"]


@pytest.fixture(scope="module")
def body_operation(server):
    """Some POST operation with a JSON body schema, from the document (whatever contexts exist)."""
    doc = requests.get(server + "/openapi.json", timeout=10).json()
    for path, item in sorted(doc["paths"].items()):
        op = item.get("post")
        if op and "requestBody" in op and "{" not in path:
            return path, any(p["name"] == "Idempotency-Key" for p in op.get("parameters", []))
    pytest.fail("no POST operation with a body and no path parameters")


def test_body_errors_are_problems(http, body_operation):
    path, idempotent = body_operation
    headers = {"Idempotency-Key": uuid.uuid4().hex} if idempotent else {}
    _problem(http.post(path, data=b"{not json", headers={**headers, "Content-Type": "application/json"}),
             400, "malformed-json")
    _problem(http.post(path, data=b"a=1", headers={**headers, "Content-Type": "text/plain"}),
             415, "unsupported-media-type")
    _problem(http.post(path, data=b"[" * 50 + b"]" * 50, headers={**headers, "Content-Type": "application/json"}),
             400, "too-deeply-nested")
    big = b'{"x": "' + b"y" * (3 * 1024 * 1024) + b'"}'
    _problem(http.post(path, data=big, headers={**headers, "Content-Type": "application/json"}),
             413, "payload-too-large")
    body = _problem(http.post(path, json={"a": 2**70}, headers=headers), 422, "validation-failed")
    assert body["errors"][0]["pointer"] == "/a"


def test_422_lists_every_field_with_json_pointer(http, body_operation, server):
    path, idempotent = body_operation
    headers = {"Idempotency-Key": uuid.uuid4().hex} if idempotent else {}
    doc = requests.get(server + "/openapi.json", timeout=10).json()
    ref = doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schema = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]
    names = sorted(schema.get("properties", {}))
    if len(names) < 2:
        pytest.fail(f"{path}: body schema needs >= 2 top-level properties for this test")
    body = _problem(http.post(path, json={n: [[[["wrong"]]]] for n in names}, headers=headers),
                    422, "validation-failed")
    pointers = {e["pointer"] for e in body["errors"]}
    assert len(pointers) >= 2, body  # all errors at once, not the first
    assert all(p.startswith("/") for p in pointers)
    assert all({"pointer", "message", "validator"} <= set(e) for e in body["errors"])


# --- OpenAPI ---------------------------------------------------------------------------------

def test_openapi_lists_every_route(app, server):
    doc = Http(server).get("/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.rule.startswith("/web/"):  # the web workspace's HTML pages are no API
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        assert path in doc["paths"], f"{rule.rule} missing from /openapi.json"
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert method.lower() in doc["paths"][path], f"{method} {rule.rule} missing"


def _walk_refs(node, base, out):
    from urllib.parse import urljoin
    if isinstance(node, dict):
        if isinstance(node.get("$id"), str):
            base = urljoin(base, node["$id"])
        if isinstance(node.get("$ref"), str):
            out.append((base, node["$ref"]))
        for key, value in node.items():
            if key not in ("const", "enum", "examples", "default"):
                _walk_refs(value, base, out)
    elif isinstance(node, list):
        for value in node:
            _walk_refs(value, base, out)


def test_openapi_document_is_well_formed_and_every_ref_resolves(server):
    from jsonschema import Draft202012Validator
    from referencing import Registry
    from referencing.jsonschema import DRAFT202012

    doc = Http(server).get("/openapi.json").json()
    assert doc["info"]["title"] and doc["info"]["version"]
    schemes = doc["components"]["securitySchemes"]
    assert schemes["apiKey"] == {**schemes["apiKey"], "type": "http", "scheme": "bearer"}
    doc_uri = "urn:patron:openapi"
    registry = Registry().with_resource(doc_uri, DRAFT202012.create_resource(doc))
    for schema in doc["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)
        if "$id" in schema:
            registry = registry.with_resource(schema["$id"], DRAFT202012.create_resource(schema))
    refs = []
    _walk_refs({k: v for k, v in doc.items() if k != "components"}, doc_uri, refs)
    for name, schema in doc["components"]["schemas"].items():
        _walk_refs(schema, schema.get("$id", doc_uri + "#/components/schemas/" + name), refs)
    assert refs
    for base, ref in refs:
        base = base if not base.startswith(doc_uri + "#") else doc_uri
        registry.resolver(base).lookup(ref)  # raises Unresolvable

    op_ids = []
    for path, item in doc["paths"].items():
        declared = set(re.findall(r"{([^}]+)}", path))
        for method, op in item.items():
            assert method in ("get", "post", "put", "patch", "delete"), (path, method)
            assert op["responses"], (path, method)
            assert all(re.fullmatch(r"[1-5]\d\d|default", code) for code in op["responses"]), (path, method)
            assert op["summary"], (path, method)
            op_ids.append(op["operationId"])
            in_path = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert in_path == declared, (path, method)
            for sec in op.get("security", []):
                assert set(sec) <= set(schemes), (path, method)
            if op.get("security"):
                assert "401" in op["responses"] and "403" in op["responses"], (path, method)
            if "requestBody" in op:
                assert "422" in op["responses"] and "415" in op["responses"], (path, method)
    assert len(op_ids) == len(set(op_ids)), "operationId must be unique"


# --- authentication and scopes ----------------------------------------------------------------

def test_missing_and_bad_keys_are_401(server):
    r = Http(server).get("/v1/policies/active")
    _problem(r, 401, "unauthorized")
    _problem(Http(server, "ptr_abc_def").get("/v1/policies/active"), 401, "unauthorized")


@pytest.mark.parametrize("header", [
    "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Token ptr_a_b", "Bearer ptr_", "Bearer ptr_onlyid",
    "Bearer ptr___", "bearer\tptr_a_b", "Bearer " + "x" * 5000, "Bearer ptr_" + "a" * 40 + "_" + "b" * 40,
    "ptr_abc_def"])
def test_malformed_authorization_headers_are_401(server, header):
    r = requests.get(server + "/v1/policies/active", headers={"Authorization": header}, timeout=10)
    _problem(r, 401, "unauthorized")


def test_tampered_secret_is_401(server, admin_token):
    tampered = admin_token[:-2] + ("AA" if not admin_token.endswith("AA") else "BB")
    _problem(Http(server, tampered).get("/v1/policies/active"), 401, "unauthorized")


def test_scope_enforced_403(server):
    token = make_token(["tickets:read"])
    body = _problem(Http(server, token).get("/v1/policies/active"), 403, "forbidden")
    assert body["required_scope"] == "policy:read"


def test_write_scope_implies_read_and_admin_implies_all(server):
    assert Http(server, make_token(["policy:write"])).get("/v1/policies/active").status_code == 200
    assert Http(server, make_token(["admin"])).get("/v1/policies/active").status_code == 200
    _problem(Http(server, make_token(["ledger:write"])).get("/v1/policies/active"), 403, "forbidden")


def test_scope_rules():
    from app.platform.auth import has_scope
    p = {"scopes": frozenset({"ledger:write"})}
    assert has_scope(p, "ledger:write") and has_scope(p, "ledger:read")
    assert not has_scope(p, "members:read") and not has_scope(p, "admin")
    assert not has_scope({"scopes": frozenset({"ledger:read"})}, "ledger:write")


def test_revoked_key_is_401(app, server):
    from app.db import db
    from app.platform.auth import create_key, revoke_key
    with app.app_context(), db.connection_context():
        token, key = create_key("to-revoke", ["policy:read"])
    assert Http(server, token).get("/v1/policies/active").status_code == 200
    with app.app_context(), db.connection_context():
        assert revoke_key(key.key_id) == 1
    _problem(Http(server, token).get("/v1/policies/active"), 401, "unauthorized")


def test_keys_are_stored_hashed(app):
    from app.db import db
    from app.models.core import ApiKey
    from app.platform.auth import create_key
    with app.app_context(), db.connection_context():
        token, key = create_key("hash-check", ["ledger:read"])
        stored = ApiKey.get(ApiKey.key_id == key.key_id)
    secret = token.split("_", 2)[2]
    assert secret not in stored.secret_hash and len(stored.secret_hash) == 64


# --- config ----------------------------------------------------------------------------------

@pytest.mark.parametrize("env, message", [
    ({"PATRON_MAX_CONTENT_LENGTH": "lots"}, "PATRON_MAX_CONTENT_LENGTH: expected an integer"),
    ({"PATRON_MAX_CONTENT_LENGTH": "10"}, "PATRON_MAX_CONTENT_LENGTH: expected an integer >= 1024"),
    ({"PATRON_DB_MAX_CONNECTIONS": "0"}, "PATRON_DB_MAX_CONNECTIONS: expected an integer >= 1"),
    ({"PATRON_TICKER": "maybe"}, "PATRON_TICKER: expected true/false"),
    ({"PATRON_REDIS_URL": "http://127.0.0.1:6379"}, "PATRON_REDIS_URL: expected redis://"),
    ({"PATRON_REDIS_URL": "redis://127.0.0.1:port/0"}, "PATRON_REDIS_URL: bad port"),
    ({"PATRON_LOG_LEVEL": "LOUD"}, "PATRON_LOG_LEVEL: expected one of"),
    ({"PATRON_JOBS_QUEUE": "my queue"}, "PATRON_JOBS_QUEUE: 1-64 characters"),
    ({"PATRON_TIMEZONE": "Mars/Olympus"}, "PATRON_TIMEZONE: unknown time zone"),
    ({"PATRON_POLICY_DIR": "/nonexistent/policies"}, "PATRON_POLICY_DIR: not a directory"),
    ({"PATRON_CONFIG": "/nonexistent/patron.yaml"}, "PATRON_CONFIG: file not found"),
])
def test_bad_settings_fail_fast_with_a_clear_message(tmp_path, env, message):
    from app.config import ConfigError, load_config
    with pytest.raises(ConfigError) as err:
        load_config(str(tmp_path), environ=env)
    assert message in str(err.value)


@pytest.mark.parametrize("text, message", [
    ("database_url: [unclosed", "cannot read settings"),
    ("- a\n- b\n", "expected a mapping"),
    ("databse_url: sqlite:///x.db\n", "unknown setting 'databse_url'"),
    ("db_max_connections: many\n", "expected an integer"),
])
def test_bad_config_file_fails_fast(tmp_path, text, message):
    from app.config import ConfigError, load_config
    (tmp_path / "config.yaml").write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(str(tmp_path), environ={})


def test_config_precedence_defaults_file_env_test_config(tmp_path):
    from app.config import load_config
    (tmp_path / "config.yaml").write_text("log_level: warning\ntimezone: UTC\ndb_max_connections: 5\n")
    cfg = load_config(str(tmp_path), environ={})
    assert (cfg["LOG_LEVEL"], cfg["TIMEZONE"], cfg["DB_MAX_CONNECTIONS"]) == ("WARNING", "UTC", 5)
    assert cfg["DATABASE_URL"] == "sqlite:///" + str(tmp_path / "patron.db")
    cfg = load_config(str(tmp_path), environ={"PATRON_TIMEZONE": "Asia/Tokyo", "PATRON_DB_MAX_CONNECTIONS": "7"})
    assert (cfg["LOG_LEVEL"], cfg["TIMEZONE"], cfg["DB_MAX_CONNECTIONS"]) == ("WARNING", "Asia/Tokyo", 7)
    cfg = load_config(str(tmp_path), {"TIMEZONE": "Europe/Paris"}, environ={"PATRON_TIMEZONE": "Asia/Tokyo"})
    assert cfg["TIMEZONE"] == "Europe/Paris"
    assert load_config(str(tmp_path), environ={})["MAX_CONTENT_LENGTH"] == 2 * 1024 * 1024


def test_bad_database_url_fails_fast(tmp_path):
    from app import create_app
    from app.config import ConfigError
    with pytest.raises(ConfigError, match="SQLite needs a file path"):
        create_app({"DATABASE_URL": "sqlite://relative.db"})
    with pytest.raises(ConfigError, match="unsupported scheme"):
        create_app({"DATABASE_URL": "mysql://x/y"})
    with pytest.raises(ConfigError, match="needs a database name"):
        create_app({"DATABASE_URL": "postgresql://127.0.0.1:5432/"})
    with pytest.raises(ConfigError, match="not a URL"):
        create_app({"DATABASE_URL": "patron.db"})


def test_nothing_reads_config_at_import_time():
    import subprocess
    import sys
    code = ("import os; os.environ['PATRON_LOG_LEVEL']='LOUD'; import app, app.api, app.cli, jobs, "
            "jobs.runner, app.wsgi" )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    # only app.wsgi (the gunicorn entry point) builds an app on import, and it must fail fast there
    assert r.returncode != 0 and "PATRON_LOG_LEVEL" in r.stderr
    r = subprocess.run([sys.executable, "-c", code.replace(", app.wsgi", "")], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr


# --- storage ---------------------------------------------------------------------------------

def test_database_engine_settings(app, db_conn):
    from app.db import db
    if BACKEND == "sqlite":
        assert db.execute_sql("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute_sql("PRAGMA foreign_keys").fetchone()[0] == 1
        assert db.execute_sql("PRAGMA busy_timeout").fetchone()[0] == 30000
    else:
        from playhouse.pool import PooledPostgresqlDatabase
        assert isinstance(db.obj, PooledPostgresqlDatabase)
        assert db.obj._max_connections == app.config["DB_MAX_CONNECTIONS"]


def test_connections_are_request_scoped(app):
    from app.db import db
    with app.app_context():
        if not db.is_closed():
            db.close()
        client = app.test_client()
        assert client.get("/readyz").status_code == 200
        assert db.is_closed()  # teardown closed (or returned to the pool) this thread's connection
        assert client.get("/nope").status_code == 404
        assert db.is_closed()


def test_write_transaction_rolls_back_and_nests(app, db_conn):
    from app.db import db, write_transaction
    from app.models.core import AuditLog
    subject = uuid.uuid4().hex
    with pytest.raises(RuntimeError):
        with write_transaction():
            AuditLog.create(actor="t", action="tx-test", subject=subject)
            raise RuntimeError("roll back")
    assert AuditLog.select().where(AuditLog.subject == subject).count() == 0
    with write_transaction():
        AuditLog.create(actor="t", action="tx-test", subject=subject)
        with write_transaction():
            assert db.in_transaction()
            AuditLog.create(actor="t", action="tx-test", subject=subject)
    assert AuditLog.select().where(AuditLog.subject == subject).count() == 2
