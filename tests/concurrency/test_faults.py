"""Fault injection: a TCP proxy between the app and PostgreSQL / Redis that can refuse and hang.

Checked: /healthz never waits for the database; a stalled or refused database is a 503
``database-unavailable`` with Retry-After within a bounded time, never a hung worker; the pool never
holds its lock across a connect; recovery within seconds of the database returning; /readyz answers
within 2 s however many callers while Redis hangs; the CLI's one-line errors.

Nothing here is skipped on either run: the PostgreSQL faults need a database server, so the SQLite run
builds its own PostgreSQL app behind the proxy as well (PostgreSQL missing is a failure, as everywhere).
"""
import os
import select
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest
import requests
from werkzeug.serving import make_server

from tests.conftest import PG_URL, Http

ROOT = Path(__file__).resolve().parents[2]


class FaultProxy:
    """Forwards 127.0.0.1:<port> to a target. ``accept``: what happens to new connections (pass |
    refuse: closed at once | hang: accepted, never answered); ``flow``: pass | hang (existing
    connections stop moving bytes, like a stopped server, and resume when set back to pass)."""

    def __init__(self, target_host, target_port):
        self.target = (target_host, target_port)
        self.accept = "pass"
        self.flow = "pass"
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.held = []  # hung connections, kept open
        self.closed = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def set(self, accept=None, flow=None):
        if accept:
            self.accept = accept
        if flow:
            self.flow = flow

    def _serve(self):
        while not self.closed.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.accept == "refuse":
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                client.close()  # RST
            elif self.accept == "hang":
                self.held.append(client)
            else:
                threading.Thread(target=self._pump, args=(client,), daemon=True).start()

    def _pump(self, client):
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            client.close()
            return
        pair = {client: upstream, upstream: client}
        try:
            while not self.closed.is_set():
                if self.flow == "hang":
                    time.sleep(0.02)  # bytes wait in the kernel's buffers, as with a stopped server
                    continue
                ready, _, _ = select.select(list(pair), [], [], 0.05)
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    pair[sock].sendall(data)
        except OSError:
            pass
        finally:
            client.close()
            upstream.close()

    def close(self):
        self.closed.set()
        self.listener.close()
        for sock in self.held:
            sock.close()


def _timed(fn):
    started = time.monotonic()
    result = fn()
    return result, time.monotonic() - started


# --------------------------------------------------------------------------- PostgreSQL

@pytest.fixture()
def pg_proxy():
    u = urlsplit(PG_URL)
    proxy = FaultProxy(u.hostname, u.port or 5432)
    yield proxy
    proxy.close()


@pytest.fixture()
def fault_app(app, pg_proxy):
    """An app (own schema) whose database is reached through the proxy; the session's binding is restored."""
    import psycopg2

    from app import create_app, policy
    from app.db import open_database
    from app.migrations import upgrade
    from app.platform.auth import create_key
    schema = f"patron_fault_{os.getpid()}_{int(time.time() * 1000) % 10**8}"
    admin = psycopg2.connect(PG_URL)
    admin.autocommit = True
    admin.cursor().execute(f'CREATE SCHEMA "{schema}"')
    u = urlsplit(PG_URL)
    url = (f"postgresql://{u.username or 'postgres'}@127.0.0.1:{pg_proxy.port}{u.path}"
           f"?options={quote('-c search_path=' + schema)}")
    fapp = create_app({"DATABASE_URL": url, "REDIS_URL": None, "TESTING": True, "LOG_LEVEL": "ERROR",
                       "INSTANCE_PATH": app.instance_path, "DB_MAX_CONNECTIONS": 4,
                       "DB_CONNECT_TIMEOUT": 1, "DB_STATEMENT_TIMEOUT": 2, "DB_LOCK_TIMEOUT": 1,
                       "RATE_LIMIT_BURST": 100_000})
    try:
        with fapp.app_context():
            upgrade()
            policy.startup(fapp)
            from app.db import db
            with db.connection_context():
                token, _ = create_key("fault", ["admin"])
        srv = make_server("127.0.0.1", 0, fapp, threaded=True)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        try:
            yield fapp, f"http://127.0.0.1:{srv.server_port}", token
        finally:
            srv.shutdown()
    finally:
        pg_proxy.set(accept="pass", flow="pass")
        open_database(app.config["DATABASE_URL"], app.config["DB_MAX_CONNECTIONS"], timeouts=(
            app.config["DB_CONNECT_TIMEOUT"], app.config["DB_STATEMENT_TIMEOUT"], app.config["DB_LOCK_TIMEOUT"]))
        admin.cursor().execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.close()


def _db_call(base, token):
    """A request that needs the database (authentication reads the key, the route reads the history)."""
    try:
        return requests.get(base + "/v1/policies/versions?limit=1", headers={"Authorization": f"Bearer {token}"},
                            timeout=30)
    except requests.RequestException as exc:  # the server must answer; a dropped request fails the test
        return exc


def _recovery(base, token, limit):
    """Seconds from now until the first 200 of a database request (polling every 0.1 s)."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        r = _db_call(base, token)
        if getattr(r, "status_code", None) == 200:
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"no recovery within {limit} s")


def test_a_stalled_database_is_503_and_recovers_within_seconds(fault_app, pg_proxy):
    fapp, base, token = fault_app
    assert _db_call(base, token).status_code == 200
    pg_proxy.set(accept="hang", flow="hang")  # the server stops: nothing answers, nothing is refused
    with ThreadPoolExecutor(max_workers=8) as pool:
        calls = [pool.submit(_timed, lambda: _db_call(base, token)) for _ in range(6)]  # more than the pool
        time.sleep(0.3)
        health = [_timed(lambda: requests.get(base + "/healthz", timeout=5)) for _ in range(5)]
        results = [c.result() for c in calls]
    for r, seconds in health:
        assert r.status_code == 200 and seconds < 1.0, seconds  # liveness never waits for the database
    for r, seconds in results:
        assert getattr(r, "status_code", r) == 503, r
        assert r.json()["code"] == "database-unavailable" and r.headers["Retry-After"].isdigit()
        assert seconds < 15, seconds  # bounded by connect/statement timeouts and the pool wait
    print(f"stalled database: every request answered 503 within {max(s for _, s in results):.1f} s")
    pg_proxy.set(accept="pass", flow="pass")
    recovery = _recovery(base, token, limit=10)
    print(f"recovery after the database stall: {recovery:.2f} s")
    assert recovery < 3.0, recovery


def test_a_refusing_database_is_503_at_once_and_recovers(fault_app, pg_proxy):
    fapp, base, token = fault_app
    assert _db_call(base, token).status_code == 200
    pg_proxy.set(accept="refuse")
    # idle pooled connections still work (only new connections are refused): close them
    from app.db import db
    db.obj.close_idle()
    r, seconds = _timed(lambda: _db_call(base, token))
    assert r.status_code == 503 and r.json()["code"] == "database-unavailable" and seconds < 3, (r, seconds)
    pg_proxy.set(accept="pass")
    recovery = _recovery(base, token, limit=10)
    print(f"recovery after refused connections: {recovery:.2f} s")
    assert recovery < 2.0


def test_the_pool_never_holds_its_lock_across_a_connect(fault_app, pg_proxy):
    from app.db import db
    pool = db.obj
    pool.close_idle()
    db.connect(reuse_if_open=True)
    db.execute_sql("SELECT 1")  # connection A, checked out by this thread
    pg_proxy.set(accept="hang")  # new connections hang (A still works)
    stuck = threading.Thread(target=_new_connection, args=(pool,), daemon=True)
    stuck.start()  # no idle connection: it opens a new one, which hangs for the connect timeout (1 s)
    time.sleep(0.2)
    started = time.monotonic()
    db.close()  # A goes back to the pool ...
    db.connect()  # ... and is checked out again at once, while the other thread is still connecting
    db.execute_sql("SELECT 1")
    took = time.monotonic() - started
    db.close()
    stuck.join(10)
    assert took < 0.5, took  # peewee's own pool and Database.connect held their locks across the connect


def _new_connection(pool):
    try:
        pool._close_raw(pool._connect())
    except Exception:  # noqa: BLE001 - expected: the connect times out
        pass


def test_cli_database_down_is_one_line_and_exit_2(pg_proxy):
    pg_proxy.set(accept="refuse")
    u = urlsplit(PG_URL)
    url = f"postgresql://{u.username or 'postgres'}@127.0.0.1:{pg_proxy.port}{u.path}"
    r = _cli(["--database-url", url, "apikey", "list"], env={"PATRON_DB_CONNECT_TIMEOUT": "1"})
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("database error: ") and "Traceback" not in r.stderr, r.stderr


# --------------------------------------------------------------------------- Redis and the CLI


def _cli(args, env=None, stdout=subprocess.PIPE, **kw):
    full = {k: v for k, v in os.environ.items() if not k.startswith("PATRON_")}
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=ROOT, env=full, stdout=stdout,
                          stderr=subprocess.PIPE, text=True, timeout=120, **kw)


@pytest.fixture()
def redis_proxy(redis_url):
    u = urlsplit(redis_url)
    proxy = FaultProxy(u.hostname, u.port or 6379)
    yield proxy, f"redis://127.0.0.1:{proxy.port}{u.path}"
    proxy.close()


def _server_seconds(app, monkeypatch):
    """{path: [seconds]} the app itself spends on each request (from the WSGI call to its response), so a
    bound on it holds on a loaded machine, where the client's own clock also counts connects and scheduling."""
    spent, real = {}, app.wsgi_app

    def timed(environ, start_response):
        started = time.monotonic()
        try:
            return real(environ, start_response)
        finally:
            spent.setdefault(environ["PATH_INFO"], []).append(time.monotonic() - started)
    monkeypatch.setattr(app, "wsgi_app", timed)
    return spent


def test_readyz_answers_within_two_seconds_while_redis_hangs(app, server, redis_proxy, monkeypatch):
    proxy, url = redis_proxy
    monkeypatch.setitem(app.config, "REDIS_URL", url)
    r = Http(server).get("/readyz")
    assert r.status_code == 200 and r.json()["checks"]["redis"] == "ok", r.text
    spent = _server_seconds(app, monkeypatch)
    proxy.set(accept="hang", flow="hang")
    with ThreadPoolExecutor(max_workers=20) as pool:
        ready = list(pool.map(lambda _: requests.get(server + "/readyz", timeout=30), range(20)))
    # the API is not starved meanwhile, and liveness never checks Redis (the hung check takes 1 s)
    health = requests.get(server + "/healthz", timeout=5)
    assert health.status_code == 200 and spent["/healthz"][0] < 1.0, spent["/healthz"]
    for r in ready:
        assert r.status_code == 503 and r.json()["checks"]["redis"].startswith("error"), r.text
    # each caller waited at most the documented 2 s: 20 callers shared bounded checks instead of queueing 20 of
    # them (queued, the k-th would wait k hung checks); scheduling on a loaded machine may add a little
    assert len(spent["/readyz"]) == 20 and max(spent["/readyz"]) <= 2.5, spent["/readyz"]
    assert len(proxy.held) < 10, len(proxy.held)  # never a Redis connection per caller
    proxy.set(accept="pass", flow="pass")
    # recovery: once the hung check's socket timeout (1 s) has passed, the next call checks again
    deadline = time.monotonic() + 15
    while Http(server).get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, "readyz did not recover"
        time.sleep(0.2)


def test_cli_redis_down_is_one_line(redis_proxy, database_url):
    proxy, url = redis_proxy
    proxy.set(accept="refuse")
    r = _cli(["--database-url", database_url, "jobs", "run", "jobs.platform.prune_job_runs"],
             env={"PATRON_REDIS_URL": url})
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("redis error: ") and "Traceback" not in r.stderr, r.stderr


def test_cli_piped_to_a_closed_reader_exits_quietly(database_url):
    # `patron jobs list | head -1`: the reader goes away while we still write
    proc = subprocess.Popen([sys.executable, "-c",
                             "import sys; from app.cli import main; sys.exit(main(sys.argv[1:]))",
                             "--database-url", database_url, "jobs", "list"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={k: v for k, v in os.environ.items() if not k.startswith("PATRON_")})
    proc.stdout.close()  # the reader is gone before the first line
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and "Traceback" not in err and "BrokenPipe" not in err, err


def test_postgres_sessions_get_connect_statement_and_lock_timeouts_by_default_and_configurable(app):
    """Hardening #9 item 2: every PostgreSQL session of the app has a connect, statement and lock timeout by
    default, and each is configurable (checked on the session itself, in both runs)."""
    from app import create_app
    from app.config import load_config
    from app.db import db, open_database
    defaults = load_config(app.instance_path, {"DATABASE_URL": PG_URL})
    assert defaults["DB_CONNECT_TIMEOUT"] > 0 and defaults["DB_STATEMENT_TIMEOUT"] > 0 and defaults["DB_LOCK_TIMEOUT"] > 0
    try:
        for override in ({}, {"DB_CONNECT_TIMEOUT": 4, "DB_STATEMENT_TIMEOUT": 7, "DB_LOCK_TIMEOUT": 3}):
            papp = create_app({"DATABASE_URL": PG_URL, "REDIS_URL": None, "TESTING": True, "LOG_LEVEL": "ERROR",
                               "INSTANCE_PATH": app.instance_path, **override})
            want = {k: override.get(k, defaults[k]) for k in ("DB_CONNECT_TIMEOUT", "DB_STATEMENT_TIMEOUT",
                                                              "DB_LOCK_TIMEOUT")}
            with papp.app_context(), db.connection_context():
                assert db.execute_sql("SHOW statement_timeout").fetchone()[0] == f"{want['DB_STATEMENT_TIMEOUT']}s"
                assert db.execute_sql("SHOW lock_timeout").fetchone()[0] == f"{want['DB_LOCK_TIMEOUT']}s"
                dsn = db.connection().get_dsn_parameters()
                assert dsn["connect_timeout"] == str(want["DB_CONNECT_TIMEOUT"]), dsn
    finally:
        open_database(app.config["DATABASE_URL"], app.config["DB_MAX_CONNECTIONS"], timeouts=(
            app.config["DB_CONNECT_TIMEOUT"], app.config["DB_STATEMENT_TIMEOUT"], app.config["DB_LOCK_TIMEOUT"]))
