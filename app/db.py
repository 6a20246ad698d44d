"""Database: one DatabaseProxy, chosen by URL; transactions that behave alike on SQLite and PostgreSQL."""
import functools
import threading
from collections import Counter
import logging
import random
import time
from contextlib import contextmanager
from urllib.parse import parse_qsl, urlparse

import peewee
from playhouse.pool import PooledPostgresqlDatabase

from app.config import ConfigError

db = peewee.DatabaseProxy()
log = logging.getLogger(__name__)
_opened = {}


class BaseModel(peewee.Model):
    class Meta:
        database = db
        legacy_table_names = False


class _Pool(PooledPostgresqlDatabase):
    """The pool, without a ``SELECT 1`` round trip (made under the pool's lock) on every check-out.

    A connection checked in less than PING_AFTER seconds ago, idle and not closed is handed out as is;
    older ones are still pinged. A server that died within that window fails the next statement once
    (psycopg2 then marks the connection closed and the pool discards it).
    """
    PING_AFTER = 5.0

    def _can_reuse(self, conn):
        reusable = super()._can_reuse(conn)
        if reusable:
            self._checked_in[self.conn_key(conn)] = time.monotonic()
        return reusable

    def _is_closed(self, conn):
        seen = self._checked_in.pop(self.conn_key(conn), None)
        if (seen is not None and not conn.closed and time.monotonic() - seen < self.PING_AFTER
                and self._adapter.txn_status(conn) == self._adapter.txn_idle):
            return False
        return super()._is_closed(conn)

    def __init__(self, *args, **kwargs):
        self._checked_in = {}
        super().__init__(*args, **kwargs)


def open_database(url, max_connections=32):
    """Open (lazily) the database named by a URL and bind the proxy to it.

    Args:
        url: ``sqlite:///path/to/file.db`` or ``postgresql://user@host:port/name``.
        max_connections: pool size for PostgreSQL.

    Returns:
        the peewee Database.

    Raises:
        ConfigError: malformed or unsupported URL.
    """
    cached = _opened.get((url, max_connections)) if isinstance(url, str) else None
    if cached is not None:
        # the CLI and tests build several apps per process; one Database (and pool) per URL
        db.initialize(cached)
        return cached
    if not isinstance(url, str) or "://" not in url:
        raise ConfigError(f"DATABASE_URL: not a URL: {url!r}")
    parsed = urlparse(url)
    params = dict(parse_qsl(parsed.query))
    if parsed.scheme == "sqlite":
        # sqlite://file.db (two slashes) would silently be in-memory; insist on a path.
        path = url[len("sqlite:///"):] if url.startswith("sqlite:///") else None
        if not path or path == ":memory:":
            raise ConfigError(
                f"DATABASE_URL: SQLite needs a file path, e.g. sqlite:///instance/patron.db, got {url!r}")
        database = peewee.SqliteDatabase(path.split("?")[0], timeout=30, pragmas={
            "journal_mode": "wal",
            "foreign_keys": 1,
            "busy_timeout": 30000,
            "synchronous": "normal",
            "cache_size": -32000,
        })
    elif parsed.scheme in ("postgres", "postgresql"):
        if not parsed.path.strip("/"):
            raise ConfigError(f"DATABASE_URL: PostgreSQL URL needs a database name: {url!r}")
        kwargs = {"host": parsed.hostname or "127.0.0.1", "port": parsed.port or 5432}
        if parsed.username:
            kwargs["user"] = parsed.username
        if parsed.password:
            kwargs["password"] = parsed.password
        kwargs.update(params)
        database = _Pool(
            parsed.path.strip("/"), max_connections=max_connections, stale_timeout=300,
            timeout=30, autorollback=True, **kwargs)
    else:
        raise ConfigError(f"DATABASE_URL: unsupported scheme {parsed.scheme!r} (use sqlite:/// or postgresql://)")
    _opened[(url, max_connections)] = database
    db.initialize(database)
    return database


def is_postgres():
    return isinstance(db.obj, peewee.PostgresqlDatabase)


@contextmanager
def connection():
    """Use the thread's connection, opening (and later closing) it if needed."""
    opened = db.connect(reuse_if_open=True)
    try:
        yield db
    finally:
        if opened and not db.in_transaction():
            db.close()


_sqlite_writer = threading.Lock()


@contextmanager
def _sqlite_write():
    # SQLite has one write lock; a writer that finds it taken sleeps in growing steps (up to 100 ms)
    # in SQLite's busy handler, which lands straight in the latency tail. This process's writers queue
    # on a Python lock instead and wake the moment it is free; other processes still meet busy_timeout.
    with _sqlite_writer:
        with db.atomic("IMMEDIATE"):
            yield


def write_transaction():
    """A write transaction: BEGIN IMMEDIATE on SQLite (queued per process), plain on PostgreSQL.

    Inside an open transaction it is a savepoint on both engines.
    """
    if is_postgres() or db.in_transaction():
        return db.atomic()
    return _sqlite_write()


def for_update(query):
    """SELECT ... FOR UPDATE on PostgreSQL; SQLite's BEGIN IMMEDIATE already serialises writers."""
    return query.for_update() if is_postgres() else query


RETRYABLE_PG = {"40001", "40P01", "55P03"}


def is_retryable(exc):
    """True for deadlocks/serialization failures (PostgreSQL) and busy database (SQLite)."""
    orig = getattr(exc, "orig", None) or getattr(exc, "__cause__", None)
    code = getattr(orig, "pgcode", None)
    if code in RETRYABLE_PG:
        return True
    text = str(exc).lower()
    return "database is locked" in text or "deadlock detected" in text or "could not serialize" in text


RETRIES = Counter()  # transactions retried by transactional(), by cause (asserted in tests)
_retries_lock = threading.Lock()


def retry_cause(exc):
    code = getattr(getattr(exc, "orig", None) or exc.__cause__, "pgcode", None)
    return {"40P01": "deadlock", "40001": "serialization", "55P03": "lock"}.get(code, "busy")


def transactional(retries=8):
    """Run the decorated function in write_transaction(), retrying on deadlock/serialization.

    A retry is never reported as a business error; after ``retries`` it re-raises. Inside an open
    transaction the function just runs (the outermost caller owns the retry). Every retry is counted
    in ``RETRIES`` by cause (``deadlock``, ``serialization``, ``lock``, ``busy``).
    """
    def deco(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            if db.in_transaction():
                return fn(*args, **kwargs)
            attempt = 0
            while True:
                try:
                    with write_transaction():
                        return fn(*args, **kwargs)
                except (peewee.OperationalError, peewee.InternalError, peewee.IntegrityError) as exc:
                    if not is_retryable(exc) or attempt >= retries:
                        raise
                    attempt += 1
                    cause = retry_cause(exc)
                    with _retries_lock:
                        RETRIES[cause] += 1
                    log.info("retrying %s after %s (attempt %d)", fn.__name__, cause, attempt)
                    time.sleep(min(0.2, 0.005 * 2 ** attempt) * random.random())
        return wrapper
    return deco
