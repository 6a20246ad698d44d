"""Canary: app.db._Pool re-implements parts of peewee's pool (to never hold a lock across a connect) and
defers BEGIN to the transaction's first statement.

If peewee changes these internals, this fails and says which one, before production finds out.
"""
import hashlib
import inspect

import peewee
from playhouse import pool

# sha256[:16] of the source of each peewee function whose logic app.db._Pool copies or relies on,
# as of peewee 4.5.3 (setup.cfg pins peewee to 4.5.x)
KNOWN = {
    "peewee.Database.connect": (peewee.Database.connect, "abc71462c544e0e9"),
    "PooledDatabase.connect": (pool.PooledDatabase.connect, "6867cf2d81603748"),
    "PooledDatabase._connect": (pool.PooledDatabase._connect, "6c3bb485a412ad94"),
    "PooledDatabase._close": (pool.PooledDatabase._close, "b9db459a7d239240"),
    "_PooledPostgresqlDatabase._is_closed": (pool._PooledPostgresqlDatabase._is_closed, "772be26e6312a97e"),
    "_PooledPostgresqlDatabase._can_reuse": (pool._PooledPostgresqlDatabase._can_reuse, "bafe0ea039004aac"),
    # _Pool's deferred BEGIN: peewee begins with a BEGIN of its own, ends with COMMIT/ROLLBACK, and runs
    # every statement through _execute_cursor
    "PostgresqlDatabase.begin": (peewee.PostgresqlDatabase.begin, "44f4de109b212bde"),
    "Database.commit": (peewee.Database.commit, "80b71aac6683d4ea"),
    "Database.rollback": (peewee.Database.rollback, "c56a4a97c1be9c86"),
    "Database._execute_cursor": (peewee.Database._execute_cursor, "a6b9a9acfcd73cf3"),
}


def test_the_peewee_internals_app_db_relies_on_are_unchanged():
    changed = [name for name, (fn, digest) in KNOWN.items()
               if hashlib.sha256(inspect.getsource(fn).encode()).hexdigest()[:16] != digest]
    assert not changed, (
        f"peewee {peewee.__version__} changed {', '.join(changed)}: app.db._Pool copies this logic "
        "(lock-free connect, pool bookkeeping). Review _Pool against the new source, then update KNOWN.")


def test_the_pool_attributes_app_db_uses_exist():
    from app.db import _Pool
    p = _Pool("x", max_connections=2, timeout=1)
    missing = [a for a in ("_pool_lock", "_pool_available", "_connections", "_in_use", "_max_connections",
                           "_wait_timeout", "_stale_timeout", "_heap_counter", "_state", "_adapter", "deferred",
                           "server_version") if not hasattr(p, a)]
    missing += [m for m in ("_is_stale", "_close_raw", "conn_key", "_set_server_version", "_initialize_connection")
                if not callable(getattr(p, m, None))]
    assert not missing, f"peewee {peewee.__version__}: PooledPostgresqlDatabase lost {missing} (used by app.db._Pool)"
    assert pool.PoolConnection._fields == ("timestamp", "connection", "checked_out"), pool.PoolConnection._fields
    assert isinstance(pool.MaxConnectionsExceeded(), ValueError)


def test_the_poll_states_app_db_waits_on_are_psycopg2s():
    """app.db._bounded_wait compares psycopg2's poll states with its own copies (no psycopg2 import there)."""
    from psycopg2 import extensions

    from app import db
    assert (db._POLL_OK, db._POLL_READ, db._POLL_WRITE) == (
        extensions.POLL_OK, extensions.POLL_READ, extensions.POLL_WRITE)
