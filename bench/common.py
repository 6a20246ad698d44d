"""Pieces every benchmark shares: paths, throwaway databases, the `patron` CLI, a `patron serve` server, an
in-process app, SQL counting, cProfile output."""
import contextlib
import http.client
import io
import json
import logging
import multiprocessing as mp
import os
import pstats
import random
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
PG = os.environ.get("BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432")

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def psql(sql, db="postgres"):
    subprocess.run(["psql", f"{PG}/{db}", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql], check=True,
                   capture_output=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def patron(url, *args):
    """Run the `patron` CLI against a database URL; its stdout."""
    env = {**os.environ, "PATRON_DATABASE_URL": url, "PATRON_LOG_LEVEL": "WARNING"}
    return subprocess.run([PY, "-m", "app.cli", *args], env=env, check=True, capture_output=True, text=True,
                          cwd=ROOT).stdout


def database(backend):
    """A throwaway database: (url, cleanup). SQLite in a temp folder, or a fresh schema in PostgreSQL `test`."""
    if backend == "sqlite":
        tmp = tempfile.mkdtemp(prefix="patron-bench-")
        return "sqlite:///" + os.path.join(tmp, "bench.db"), lambda: shutil.rmtree(tmp, ignore_errors=True)
    import psycopg2
    pg_url = os.environ.get("PATRON_BENCH_POSTGRES_URL", f"{PG}/test")
    schema = f"patron_bench_{secrets.token_hex(3)}"
    conn = psycopg2.connect(pg_url)
    conn.autocommit = True
    conn.cursor().execute(f'CREATE SCHEMA "{schema}"')

    def drop():
        conn.cursor().execute(f'DROP SCHEMA "{schema}" CASCADE')
        conn.close()
    sep = "&" if "?" in pg_url else "?"
    return f"{pg_url}{sep}options={quote('-c search_path=' + schema)}", drop


def in_app_process(url, body):
    """Run the Python source ``body`` in a fresh process inside an app on ``url`` (app context, one connection,
    policies active; ``app`` and ``db`` are defined); returns the last line it printed."""
    code = (f"from app import create_app, policy\nfrom app.db import db\n"
            f"app = create_app({{'DATABASE_URL': {url!r}, 'LOG_LEVEL': 'WARNING'}})\n"
            "with app.app_context(), db.connection_context():\n    policy.startup(app)\n"
            + textwrap.indent(textwrap.dedent(body).strip("\n"), "    ") + "\n")
    out = subprocess.run([PY, "-c", code], env={**os.environ, "PATRON_LOG_LEVEL": "WARNING"}, capture_output=True,
                         text=True, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"in-app process failed:\n{out.stderr[-3000:]}")
    lines = out.stdout.strip().splitlines()
    return lines[-1] if lines else ""


class Server:
    """``patron serve`` (gunicorn, no Redis, no ticker) on ``url`` with a fresh API key of ``scopes``; ``.port``, ``.token``."""

    def __init__(self, url, workers, threads, scopes, port=None, start_seconds=60):
        self.url, self.port = url, port or free_port()
        self.token = patron(url, "apikey", "create", "--name", "bench", "--scopes", scopes).strip()
        env = {**os.environ, "PATRON_DATABASE_URL": url, "PATRON_LOG_LEVEL": "WARNING", "PATRON_TICKER": "false"}
        env.pop("PATRON_REDIS_URL", None)
        self.log = tempfile.NamedTemporaryFile(prefix="bench-server-", suffix=".log", delete=False)
        self.proc = subprocess.Popen([PY, "-m", "app.cli", "serve", "--port", str(self.port), "--workers",
                                      str(workers), "--threads", str(threads)], env=env, cwd=ROOT,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + start_seconds  # workers import the app: slow on a loaded machine
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                c.request("GET", "/healthz")
                if c.getresponse().status == 200:
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not start; see {self.log.name}")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


class _Connection:
    """A minimal HTTP/1.1 keep-alive client on a raw socket: the load generator's own CPU (on the same cores as
    the server) stays small — pgbench's client is C — so the figures measure the server. It reopens the
    socket when the server closes it (gunicorn's sync worker answers ``Connection: close``)."""

    def __init__(self, port, timeout):
        self.port, self.timeout, self.sock, self.buf = port, timeout, None, b""

    def request(self, raw):
        """Send one pre-encoded request; (status, body bytes)."""
        for attempt in (0, 1):
            if self.sock is None:
                self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout)
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.buf = b""
            try:
                self.sock.sendall(raw)
                return self._response()
            except (ConnectionError, _Closed):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _response(self):
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(b":") for line in lines[1:])}
        if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            body = self._chunked()
        else:
            length = int(headers.get(b"content-length", b"0"))
            while len(self.buf) < length:
                self._fill()
            body, self.buf = self.buf[:length], self.buf[length:]
        if headers.get(b"connection", b"").lower() == b"close":
            self.close()
        return status, body

    def _chunked(self):
        parts = []
        while True:
            while b"\r\n" not in self.buf:
                self._fill()
            size_line, self.buf = self.buf.split(b"\r\n", 1)
            size = int(size_line.split(b";")[0], 16)
            while len(self.buf) < size + 2:
                self._fill()
            parts.append(self.buf[:size])
            self.buf = self.buf[size + 2:]
            if size == 0:
                return b"".join(parts)

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise _Closed()
        self.buf += data

    def close(self):
        if self.sock is not None:
            self.sock.close()
        self.sock, self.buf = None, b""


class _Closed(Exception):
    pass


def _encode_request(method, path, body, headers):
    payload = b"" if body is None else json.dumps(body).encode()
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(payload)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


def _http_client(port, token, seconds, request, index, timeout, out):
    rnd = random.Random(index * 7919 + time.time_ns())
    prefix = secrets.token_hex(5)
    conn = _Connection(port, timeout)
    auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    lat, done, errors, n = [], 0, 0, 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        n += 1
        method, path, body, headers, counted = request(rnd, prefix, index, n)
        raw = _encode_request(method, path, body, {**auth, **headers})
        t0 = time.perf_counter()
        status, data = conn.request(raw)
        lat.append(time.perf_counter() - t0)
        if status >= 300:
            errors += 1
            if errors < 3:
                print(f"  {method} {path}: error {status}: {data[:300]!r}", file=sys.stderr)
        else:
            done += counted(json.loads(data)) if callable(counted) else counted
    conn.close()
    out.put((done, errors, lat))


def http_load(port, token, clients, seconds, request, timeout=60):
    """Drive a server from ``clients`` processes for ``seconds``, each on one keep-alive connection.

    ``request(rnd, prefix, index, n)`` gives request ``n`` of client ``index`` (its own ``random.Random`` and a
    prefix unique to it, for ids): ``(method, path, json body or None, extra headers, units)``, where units is
    what a success counts (a number, or a function of the decoded response body). Returns (units per second,
    sorted latencies in seconds, errors).
    """
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    procs = [ctx.Process(target=_http_client, args=(port, token, seconds, request, i, timeout, q))
             for i in range(clients)]
    t0 = time.perf_counter()
    for p in procs:
        p.start()
    results = [q.get() for _ in procs]
    elapsed = time.perf_counter() - t0
    for p in procs:
        p.join()
    lat = sorted(x for r in results for x in r[2])
    return sum(r[0] for r in results) / min(elapsed, seconds + 0.5), lat, sum(r[1] for r in results)


def percentile_ms(lat, fraction):
    """The ``fraction`` percentile of sorted latencies (seconds), in ms; NaN when there are none."""
    return 1000 * lat[min(len(lat) - 1, int(fraction * len(lat)))] if lat else float("nan")


def close_database():
    """Close this process's connections (the pool's too) before a throwaway database is removed."""
    from app.db import db
    if not db.is_closed():
        db.close()
    if getattr(db.obj, "close_all", None):
        db.obj.close_all()


def print_profile(prof, path, cumulative=50, tottime=25):
    """Save a cProfile to ``path`` in the temp folder and print its top entries by cumulative and own time."""
    prof.dump_stats(os.path.join(tempfile.gettempdir(), path))
    for key, count in (("cumulative", cumulative), ("tottime", tottime)):
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats(key).print_stats(count)
        print(out.getvalue())


def in_process_app(url, setup=None):
    """An app on ``url``, migrated, policies active; ``setup()`` runs in a connection. Returns (app, admin token)."""
    logging.disable(logging.INFO)
    from app import create_app, policy
    from app.db import db
    from app.migrations import upgrade
    from app.platform.auth import create_key
    app = create_app({"DATABASE_URL": url, "REDIS_URL": None, "LOG_LEVEL": "WARNING"})
    with app.app_context():
        upgrade()
        policy.startup(app)
        with db.connection_context():
            if setup:
                setup()
            token, _ = create_key("bench", ["admin"])
    logging.disable(logging.INFO)
    return app, token


def statements_of(fn):
    """The SQL statements (and BEGIN/COMMIT/ROLLBACK) ``fn()`` runs."""
    with counted_statements() as statements:
        fn()
    return list(statements)


@contextlib.contextmanager
def counted_statements():
    """Collect every SQL statement (and BEGIN/COMMIT/ROLLBACK) the database runs inside the block."""
    from app.db import db
    statements = []
    real = db.obj.execute_sql
    real_tx = {name: getattr(db.obj, name) for name in ("begin", "commit", "rollback")}

    def counting(sql, params=None, *a, **kw):
        statements.append(sql)
        return real(sql, params, *a, **kw)

    def tx(name):
        def call(*a, **kw):
            statements.append(name.upper())
            return real_tx[name](*a, **kw)
        return call

    db.obj.execute_sql = counting
    for name in real_tx:
        setattr(db.obj, name, tx(name))
    try:
        yield statements
    finally:
        del db.obj.execute_sql
        for name in real_tx:
            delattr(db.obj, name)
