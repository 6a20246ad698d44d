"""Database: one DatabaseProxy, chosen by URL; transactions that behave alike on SQLite and PostgreSQL."""
import functools
import heapq
import select
import threading
from collections import Counter
import logging
import random
import time
from contextlib import contextmanager
from urllib.parse import parse_qsl, urlparse

import peewee
from playhouse.pool import MaxConnectionsExceeded, PoolConnection, PooledPostgresqlDatabase, PooledSqliteDatabase

from app.config import ConfigError
from app.metrics import TRANSACTION_RETRIES

db = peewee.DatabaseProxy()
log = logging.getLogger(__name__)
_opened = {}


class BaseModel(peewee.Model):
    class Meta:
        database = db
        legacy_table_names = False


class _Pool(PooledPostgresqlDatabase):
    """peewee's pool, with two changes that rely on its 4.x internals (pinned in setup.cfg; the canary
    test ``tests/unit/test_db_pool_canary.py`` fails by name when they change):

    - no lock is held across a connect or a ping. peewee's ``Database.connect`` holds the database-wide
      lock and ``PooledDatabase._connect`` the pool lock while the driver connects, so one hung connect
      froze every thread of the process, ``/healthz`` included. Here the locks only guard the bookkeeping;
      a connection being opened or pinged counts against ``max_connections`` all the same.
    - no ``SELECT 1`` round trip on every check-out: a connection checked in less than PING_AFTER seconds
      ago, idle and not closed is handed out as is; older ones are still pinged (outside the lock). A
      server that died within that window fails the next statement once (the connection is then closed
      and the pool discards it).
    """
    PING_AFTER = 5.0

    def __init__(self, *args, **kwargs):
        self._checked_in = {}
        self._opening = 0  # connections being opened or pinged right now (outside the lock)
        super().__init__(*args, **kwargs)

    def connect(self, reuse_if_open=False):
        # PooledDatabase.connect's wait for a free slot, around our lock-free _open()
        deadline = time.monotonic() + (self._wait_timeout or 0)
        while True:
            try:
                return self._open(reuse_if_open)
            except MaxConnectionsExceeded:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise MaxConnectionsExceeded("Max connections exceeded, timed out attempting to connect.")
                with self._pool_available:
                    self._pool_available.wait(timeout=min(remaining, 1.0))

    def _open(self, reuse_if_open):
        # peewee.Database.connect without its lock: the connection state is per thread anyway
        if self.deferred:
            raise peewee.InterfaceError("Error, database must be initialized before opening a connection.")
        if not self._state.closed:
            if reuse_if_open:
                return False
            raise peewee.OperationalError("Connection already opened.")
        self._state.reset()
        with peewee.__exception_wrapper__:
            self._state.set_connection(self._connect())
            if self.server_version is None:
                self._set_server_version(self._state.conn)
            self._initialize_connection(self._state.conn)
        return True

    def _connect(self):
        while True:
            with self._pool_lock:
                if self._connections:
                    ts, _n, conn = heapq.heappop(self._connections)
                elif self._max_connections and len(self._in_use) + self._opening >= self._max_connections:
                    raise MaxConnectionsExceeded("Exceeded maximum connections.")
                else:
                    ts, conn = None, None
                self._opening += 1
            try:
                if conn is None:
                    conn = peewee.PostgresqlDatabase._connect(self)  # the driver's connect, unlocked
                    ts = time.time()
                elif self._is_closed(conn):
                    continue
                elif self._stale_timeout and self._is_stale(ts):
                    self._close_raw(conn)
                    continue
                with self._pool_lock:
                    self._in_use[self.conn_key(conn)] = PoolConnection(ts, conn, time.time())
                return conn
            finally:
                with self._pool_lock:
                    self._opening -= 1
                    self._pool_available.notify()

    # BEGIN travels with the transaction's first statement instead of in a round trip of its own (a
    # posting is a handful of statements, so one trip fewer is felt). COMMIT/ROLLBACK of a transaction
    # that sent nothing send nothing either. Likewise a write nothing reads back (``execute_later``:
    # app.platform.sql.deferred) travels with the transaction's next statement or with its COMMIT.
    def begin(self, isolation_level=None):
        if self.is_closed():
            raise peewee.InterfaceError("Cannot begin, database connection not open.")
        self._state.conn.pending_begin = "BEGIN"

    def execute_later(self, sql, params):
        """Inside a transaction: send this write (no result read) with the next statement or the COMMIT.

        Its error, if any, is raised by that statement (or by the commit, which then rolls back); a
        rollback drops it unsent. Outside a transaction it runs now.
        """
        conn = self._state.conn
        if conn is None or not self.in_transaction():
            self.execute_sql(sql, params)
            return
        from psycopg2.extensions import encodings
        text = conn.cursor().mogrify(sql, params).decode(encodings.get(conn.encoding, "utf-8"))
        pending = getattr(conn, "pending_write", None)
        conn.pending_write = f"{pending}; {text}" if pending else text

    def _execute_cursor(self, sql, params, **cursor_options):
        conn = self._state.conn
        begin, write = getattr(conn, "pending_begin", None), getattr(conn, "pending_write", None)
        if begin or write:
            conn.pending_begin = conn.pending_write = None
            # the queued write is already interpolated: its % must survive this statement's interpolation
            head = [begin] if begin else []
            if write:
                head.append(write.replace("%", "%%"))
            sql = f"{'; '.join(head)}; {sql}"
        return super()._execute_cursor(sql, params, **cursor_options)

    def commit(self):
        conn = self._state.conn
        write = getattr(conn, "pending_write", None) if conn is not None else None
        if write:
            begin = conn.pending_begin
            conn.pending_begin = conn.pending_write = None
            if self.is_closed():
                raise peewee.InterfaceError("Cannot commit, database connection not open.")
            with peewee.__exception_wrapper__:
                self.cursor().execute(f"{begin}; {write}; COMMIT" if begin else f"{write}; COMMIT")
            return
        if not self._pending_end():
            super().commit()

    def rollback(self):
        conn = self._state.conn
        if conn is not None:
            conn.pending_write = None
        if not self._pending_end():
            super().rollback()

    def _pending_end(self):
        conn = self._state.conn
        if conn is not None and getattr(conn, "pending_begin", None):
            conn.pending_begin = None
            return True
        return False

    def _can_reuse(self, conn):
        conn.pending_begin = conn.pending_write = None
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


def _connection_class(connect_timeout, wait_timeout):
    """A psycopg2 connection class whose waits are bounded (see ``_bounded_wait``)."""
    from psycopg2.extensions import connection

    class BoundedConnection(connection):
        def __init__(self, *args, **kwargs):
            self.wait_limit = connect_timeout
            super().__init__(*args, **kwargs)
            self.wait_limit = wait_timeout

    return BoundedConnection


def _bounded_wait(conn):
    """psycopg2 wait callback: every round trip of a Patron connection ends within its ``wait_limit``.

    statement_timeout only helps when the server answers; a stalled server or network would otherwise
    hold the request (and its pool slot) forever. Past the limit the connection is closed and the
    caller gets OperationalError (a 503 ``database-unavailable`` at the API).
    """
    limit = getattr(conn, "wait_limit", None)
    deadline = time.monotonic() + limit if limit else None
    poller = None
    while True:
        state = conn.poll()
        if state == _POLL_OK:
            return
        if poller is None:
            poller = select.poll()
        else:
            poller.unregister(conn.fileno())
        if state == _POLL_READ:
            poller.register(conn.fileno(), select.POLLIN)
        elif state == _POLL_WRITE:
            poller.register(conn.fileno(), select.POLLOUT)
        else:
            import psycopg2
            raise psycopg2.OperationalError(f"bad poll state {state}")
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and (remaining <= 0 or not poller.poll(remaining * 1000)):
            import psycopg2
            raise psycopg2.OperationalError(f"no answer from the database within {limit} s")
        if remaining is None:
            poller.poll()


# psycopg2.extensions.POLL_OK / POLL_READ / POLL_WRITE (fixed by libpq's protocol; app.db does not import
# psycopg2 at module level: SQLite installs may lack it). tests/unit/test_db_pool_canary.py checks them.
_POLL_OK, _POLL_READ, _POLL_WRITE = 0, 1, 2


def open_database(url, max_connections=32, timeouts=(5, 30, 10)):
    """Open (lazily) the database named by a URL and bind the proxy to it.

    Args:
        url: ``sqlite:///path/to/file.db`` or ``postgresql://user@host:port/name``.
        max_connections: pool size for PostgreSQL.
        timeouts: PostgreSQL (connect, statement, lock) timeouts in seconds; 0 = none for statement/lock.
            Each round trip is also bounded on the client at statement + connect seconds, so a stalled
            server cannot hold a request forever. Query parameters of the URL win (``connect_timeout``,
            ``options=-c statement_timeout=...``).

    Returns:
        the peewee Database.

    Raises:
        ConfigError: malformed or unsupported URL.
    """
    cached = _opened.get((url, max_connections, tuple(timeouts))) if isinstance(url, str) else None
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
        # Pooled like PostgreSQL: a request's connection goes back to the pool instead of being closed.
        # Closing the last connection checkpoints the WAL (an fsync) and every new one sets its pragmas
        # again; both cost more than the posting itself. The pool hands a connection to one thread at a
        # time (hence check_same_thread=False) and rolls back a transaction left open on check-in.
        database = PooledSqliteDatabase(path.split("?")[0], max_connections=max_connections, stale_timeout=300,
                                        timeout=30, check_same_thread=False, pragmas={
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
        connect_s, statement_s, lock_s = (int(t) for t in timeouts)
        kwargs.setdefault("connect_timeout", connect_s)
        options = kwargs.get("options", "")
        if "statement_timeout" not in options:
            options += f" -c statement_timeout={statement_s * 1000}"
        if "lock_timeout" not in options:
            options += f" -c lock_timeout={lock_s * 1000}"
        kwargs["options"] = options.strip()
        # a dead peer (host down, cable cut) is noticed in ~10 s instead of the kernel's 2 hours
        kwargs.setdefault("keepalives", 1)
        kwargs.setdefault("keepalives_idle", 5)
        kwargs.setdefault("keepalives_interval", 2)
        kwargs.setdefault("keepalives_count", 3)
        import psycopg2.extensions
        wait_s = (statement_s or 300) + int(kwargs["connect_timeout"])
        kwargs["connection_factory"] = _connection_class(int(kwargs["connect_timeout"]), wait_s)
        psycopg2.extensions.set_wait_callback(_bounded_wait)
        # timeout: how long a request waits for a free pool slot before 503 (not the 30 s it was)
        database = _Pool(
            parsed.path.strip("/"), max_connections=max_connections, stale_timeout=300,
            timeout=max(10, int(kwargs["connect_timeout"])), **kwargs)
    else:
        raise ConfigError(f"DATABASE_URL: unsupported scheme {parsed.scheme!r} (use sqlite:/// or postgresql://)")
    _opened[(url, max_connections, tuple(timeouts))] = database
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


@contextmanager
def patient(seconds):
    """Let this thread's (open) connection wait up to ``seconds`` per statement: the server's
    statement_timeout and the client-side bound both (migrations, which wait for each other's lock and
    may rewrite big tables). Restored afterwards."""
    conn = db.connection()
    before = getattr(conn, "wait_limit", None)
    if is_postgres():
        db.execute_sql("SET statement_timeout = %s", (f"{int(seconds)}s",))
    if before is not None:
        conn.wait_limit = seconds + 5
    try:
        yield
    finally:
        if before is not None:
            conn.wait_limit = before
        if is_postgres() and not conn.closed:
            db.execute_sql("RESET statement_timeout")


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
                    TRANSACTION_RETRIES.labels(cause).inc()
                    log.info("retrying %s after %s (attempt %d)", fn.__name__, cause, attempt)
                    time.sleep(min(0.2, 0.005 * 2 ** attempt) * random.random())
        return wrapper
    return deco
