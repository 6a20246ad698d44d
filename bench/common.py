"""Pieces every benchmark shares: paths, throwaway databases, the `patron` CLI, an in-process app, SQL counting."""
import contextlib
import logging
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
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
