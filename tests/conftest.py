"""Test wiring: the backend comes from PATRON_TEST_DATABASE (sqlite | postgres); services never skip."""
import os
import secrets
import shutil
import tempfile
import threading
from urllib.parse import quote

import pytest
import requests
from werkzeug.serving import make_server

BACKEND = os.environ.get("PATRON_TEST_DATABASE", "sqlite")
# webhook secrets of this session are encrypted under this key (worker processes get it too)
TEST_SECRET_KEYS = "cGF0cm9uLXRlc3RzLXNlY3JldC1rZXktMzJieXRlcyE="  # base64 of b"patron-tests-secret-key-32bytes!"
PG_URL = os.environ.get("PATRON_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("PATRON_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
# The rules engine of the test app; `-p tests.no_durable` (durable_rules unimportable) selects reference.
RULES_ENGINE = os.environ.get("PATRON_TEST_RULES_ENGINE", "durable")
# Engines the tests may ask for by name (durable only where durable_rules is loaded).
ENGINES = ("durable", "reference") if RULES_ENGINE == "durable" else ("reference",)

# The suite never sees the shell's settings: every PATRON_* variable but the PATRON_TEST_* ones above is
# dropped, and PATRON_CONFIG names an empty file, so neither this process nor the servers and workers it
# starts read instance/config.yaml. Tests that need a setting pass it (test_config, monkeypatch, env=).
for _name in [n for n in os.environ if n.startswith("PATRON_") and not n.startswith("PATRON_TEST_")]:
    del os.environ[_name]
_CONFIG_DIR = tempfile.mkdtemp(prefix="patron-test-config-")
os.environ["PATRON_CONFIG"] = os.path.join(_CONFIG_DIR, "config.yaml")
open(os.environ["PATRON_CONFIG"], "w").close()


@pytest.fixture(scope="session", autouse=True)
def contexts():
    """Every context's policy kinds, rulesets and actions, registered as create_app and the CLI do."""
    from app import contexts as wiring
    from app import engine
    engine.configure(RULES_ENGINE)
    wiring.register()
    yield wiring
    shutil.rmtree(_CONFIG_DIR, ignore_errors=True)


def _database_url(tmpdir):
    if BACKEND == "sqlite":
        return "sqlite:///" + os.path.join(tmpdir, "patron.db"), None
    if BACKEND == "postgres":
        import psycopg2
        schema = f"patron_test_{os.getpid()}_{secrets.token_hex(3)}"
        conn = psycopg2.connect(PG_URL)
        conn.autocommit = True
        conn.cursor().execute(f'CREATE SCHEMA "{schema}"')
        conn.close()
        sep = "&" if "?" in PG_URL else "?"
        return f"{PG_URL}{sep}options={quote('-c search_path=' + schema)}", schema
    raise RuntimeError(f"PATRON_TEST_DATABASE must be sqlite or postgres, not {BACKEND!r}")


def _drop_schema(schema):
    import psycopg2
    conn = psycopg2.connect(PG_URL)
    conn.autocommit = True
    conn.cursor().execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    conn.close()


@pytest.fixture()
def fresh_database_url():
    """A database of its own (new SQLite file or PostgreSQL schema) for a demo instance started by the test."""
    tmpdir = tempfile.mkdtemp(prefix="patron-fresh-")
    url, schema = _database_url(tmpdir)
    yield url
    if schema:
        _drop_schema(schema)
    shutil.rmtree(tmpdir, ignore_errors=True)


@pytest.fixture()
def demo_instance(fresh_database_url):
    """A fresh `patron demo` + `patron serve` on an ephemeral port (tests/instance.py)."""
    from tests.instance import DemoInstance
    inst = DemoInstance(fresh_database_url)
    try:
        yield inst.start()
    finally:
        inst.stop()


@pytest.fixture(scope="session")
def database_url():
    tmpdir = tempfile.mkdtemp(prefix="patron-test-")
    url, schema = _database_url(tmpdir)
    yield url
    if schema:
        _drop_schema(schema)
    shutil.rmtree(tmpdir, ignore_errors=True)


@pytest.fixture(scope="session")
def app(database_url, tmp_path_factory):
    from app import create_app
    from app.migrations import upgrade
    from app import policy
    # LOG_LEVEL WARNING: thousands of access lines would bury a failure's own output
    application = create_app({"DATABASE_URL": database_url, "REDIS_URL": None, "TESTING": True,
                              "RULES_ENGINE": RULES_ENGINE,
                              "LOG_LEVEL": os.environ.get("PATRON_TEST_LOG_LEVEL", "WARNING"),
                              "INSTANCE_PATH": str(tmp_path_factory.mktemp("instance")),
                              # receivers in tests listen on loopback; the refusal has its own test
                              "WEBHOOK_ALLOW_PRIVATE": True,
                              "SECRET_KEYS": TEST_SECRET_KEYS,
                              # many validate/apply calls share the admin key; the limit has its own test
                              "RATE_LIMIT_BURST": 100_000})
    upgrade()
    with application.app_context():
        policy.startup(application)
    application.after_request(_documented_response)
    return application


def _documented_response(response):
    """Every JSON success the suite receives matches its operation's documented response schema (``response=``),
    so the OpenAPI document cannot drift from what the routes answer."""
    from flask import current_app, request
    from app.schemas import errors_of
    op = getattr(current_app.view_functions.get(request.endpoint), "operation", None)
    if (op is None or not op["response"] or not response.is_json or response.direct_passthrough
            or (response.status_code != op["status"] and response.status_code not in op.get("also", {}))):
        return response
    errors = errors_of(op["response"], response.get_json())
    assert not errors, (f"{request.method} {request.path} answered {response.status_code} with a body its documented "
                        f"schema {op['response']} refuses: {errors[:5]}")
    return response


@pytest.fixture()
def client(app):
    return app.test_client()


@pytest.fixture()
def db_conn(app):
    """A connection for direct service calls in this thread."""
    from app.db import db
    with app.app_context():
        db.connect(reuse_if_open=True)
        yield db
        if not db.is_closed() and not db.in_transaction():
            db.close()


@pytest.fixture(scope="session")
def admin_token(app):
    from app.db import db
    from app.platform.auth import create_key
    with db.connection_context():
        token, _ = create_key("tests-admin", ["admin"])
    return token


def make_token(scopes, name="tests"):
    from app.db import db
    from app.platform.auth import create_key
    with db.connection_context():
        token, _ = create_key(name, scopes)
    return token


@pytest.fixture(scope="session")
def server(app):
    """The real WSGI server on a free loopback port, in a thread: tests call it over HTTP."""
    srv = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_port}"
    srv.shutdown()


class Http:
    """requests.Session bound to the live server and an API key.

    State-changing calls get a fresh ``Idempotency-Key`` unless the test passes its own (``key=...`` or
    the header) or ``key=False`` to send none (tests of the 428 itself).
    """

    def __init__(self, base, token=None):
        self.base = base
        self.session = requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def request(self, method, path, key=None, **kw):
        headers = dict(kw.pop("headers", None) or {})
        if key:
            headers["Idempotency-Key"] = key
        elif key is None and method.upper() in ("POST", "PUT", "PATCH", "DELETE") \
                and "Idempotency-Key" not in headers:
            headers["Idempotency-Key"] = "test-" + secrets.token_hex(12)
        return self.session.request(method, self.base + path, timeout=30, headers=headers, **kw)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, json=None, key=None, **kw):
        return self.request("POST", path, json=json, key=key, **kw)

    def put(self, path, json=None, key=None, **kw):
        return self.request("PUT", path, json=json, key=key, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)


@pytest.fixture()
def http(server, admin_token):
    return Http(server, admin_token)


@pytest.fixture(scope="session")
def redis_url():
    """Real Redis; missing Redis is a failure, not a skip."""
    import redis
    conn = redis.Redis.from_url(REDIS_URL)
    conn.ping()  # raises -> the test errors, never skips
    # no FLUSHDB: other test sessions may share this Redis database; tests use their own queue names
    return REDIS_URL


@pytest.fixture()
def jobs_queue(app, redis_url, monkeypatch):
    """enqueue() goes to real Redis, on a queue of this test's own; returns the queue name."""
    import uuid
    name = f"test-{uuid.uuid4().hex[:12]}"
    monkeypatch.setitem(app.config, "REDIS_URL", redis_url)
    monkeypatch.setitem(app.config, "JOBS_QUEUE", name)
    return name


STAFF_PASSWORD = "Correct-Horse-7"


def set_staff_password(staff_no, password=STAFF_PASSWORD):
    """Give a staff member a password directly through the service (no HTTP)."""
    from app.db import db
    from app.services import identity
    with db.connection_context():
        identity.set_password("tests", staff_no, password)


def sign_in(server, staff_no, password=STAFF_PASSWORD, set_password=True, **extra):
    """An Http bound to a fresh staff session (the password is set first unless told otherwise)."""
    if set_password:
        set_staff_password(staff_no, password)
    r = requests.post(server + "/v1/auth/login", json={"staff_no": staff_no, "password": password, **extra},
                      timeout=30)
    assert r.status_code == 200, r.text
    return Http(server, r.json()["token"])


def create_staff(http, department, roles, prefix="s"):
    """A new staff member (unique number) created over HTTP by an admin key; returns the staff number."""
    staff_no = f"{prefix}-{secrets.token_hex(5)}"
    r = http.post("/v1/staff", json={"staff_no": staff_no, "name": staff_no, "department": department,
                                     "roles": list(roles)})
    assert r.status_code == 201, r.text
    return staff_no


class FakeTerminal:
    """stderr that says it is a terminal, keeping what is drawn on it."""

    def __init__(self):
        import io
        self.buffer = io.StringIO()

    def write(self, text):
        return self.buffer.write(text)

    def flush(self):
        pass

    def isatty(self):
        return True

    def getvalue(self):
        return self.buffer.getvalue()
