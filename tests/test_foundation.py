"""App factory, errors as problem+json, authentication and scopes, over real HTTP."""
import pytest

from tests.conftest import Http, make_token


def test_healthz_is_public(server):
    r = Http(server).get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_readyz_reports_database(server):
    r = Http(server).get("/readyz")
    assert r.status_code == 200
    assert r.json()["checks"]["database"] == "ok"


def test_unknown_route_is_problem(server):
    r = Http(server).get("/nope")
    assert r.status_code == 404
    assert r.headers["Content-Type"].startswith("application/problem+json")
    assert r.json()["code"] == "not-found"


def test_missing_and_bad_keys_are_401(server):
    assert Http(server).get("/v1/policies/active").status_code == 401
    r = Http(server, "ptr_abc_def").get("/v1/policies/active")
    assert r.status_code == 401 and r.json()["code"] == "unauthorized"


def test_scope_enforced_403(server):
    token = make_token(["tickets:read"])
    r = Http(server, token).get("/v1/policies/active")
    assert r.status_code == 403 and r.json()["required_scope"] == "policy:read"


def test_openapi_lists_every_route(app, server):
    doc = Http(server).get("/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    import re
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        assert path in doc["paths"], f"{rule.rule} missing from /openapi.json"


def test_bad_database_url_fails_fast(tmp_path):
    from app import create_app
    from app.config import ConfigError
    with pytest.raises(ConfigError, match="SQLite needs a file path"):
        create_app({"DATABASE_URL": "sqlite://relative.db"})
    with pytest.raises(ConfigError, match="unsupported scheme"):
        create_app({"DATABASE_URL": "mysql://x/y"})
