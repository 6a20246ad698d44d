"""Versioned migrations: modules mNNNN_<name>.py with ``upgrade(db)``, applied once, in name order.

Each migration is frozen DDL for both engines (``SQLITE`` and ``POSTGRES`` lists run by ``ddl()``) and
never imports ``app.models``: a model changes, its history does not, so an empty database upgraded from
the first migration always ends with the same schema (``app.drift`` compares it with the models).

Number ranges per bounded context keep parallel work from colliding:
0000 core, 0050 staff/identity, 0100 policy, 0200 ledger, 0300 membership, 0400 tickets,
0500 service desk, 0600 simulation.

Concurrent ``upgrade()`` runs (several servers starting at once) are serialised by a database lock:
a session advisory lock on PostgreSQL; on SQLite each migration runs in ``BEGIN IMMEDIATE`` and is
re-checked inside it, so the second runner finds it applied and skips it.
"""
import datetime as dt
import importlib
import logging
import pkgutil
import re
from contextlib import contextmanager

import peewee

from app.db import db, patient, write_transaction

log = logging.getLogger(__name__)

TABLE = "schema_migration"
_TABLE_DDL = {
    "sqlite": 'CREATE TABLE IF NOT EXISTS "schema_migration" ('
              '"name" VARCHAR(200) NOT NULL PRIMARY KEY, "applied_at" DATETIME NOT NULL)',
    "postgres": 'CREATE TABLE IF NOT EXISTS "schema_migration" ('
                '"name" VARCHAR(200) NOT NULL PRIMARY KEY, "applied_at" TIMESTAMP NOT NULL)',
}
# pg_advisory_lock key of `patron db upgrade` (any constant shared by every process of the product)
LOCK_KEY = 0x70617472_6F6E4D47  # "patronMG"
LOCK_TIMEOUT_SECONDS = 600  # a runner waiting longer than this for another one fails instead of hanging


def engine_of(database):
    """``postgres`` or ``sqlite``: which frozen DDL list applies to ``database``."""
    database = getattr(database, "obj", None) or database
    return "postgres" if isinstance(database, peewee.PostgresqlDatabase) else "sqlite"


# SQLite's names for PostgreSQL's column types, as peewee's fields map them on each engine. Statements both
# engines share are written once in PostgreSQL's types and run on SQLite through ``sqlite_types``. Frozen like
# the migrations themselves: tests/unit/test_migrations_frozen.py pins every migration's statements.
_SQLITE_TYPES = ((r'"id" SERIAL NOT NULL PRIMARY KEY', '"id" INTEGER NOT NULL PRIMARY KEY'),
                 (r"\bBIGINT\b", "INTEGER"), (r"\bTIMESTAMP\b", "DATETIME"), (r"\bBOOLEAN\b", "INTEGER"),
                 (r"\bDOUBLE PRECISION\b", "REAL"))


def sqlite_types(statements):
    """The SQLite form of statements written in PostgreSQL's column types (see ``_SQLITE_TYPES``)."""
    out = []
    for statement in statements:
        for pattern, replacement in _SQLITE_TYPES:
            statement = re.sub(pattern, replacement, statement)
        out.append(statement)
    return out


def ddl(database, sqlite, postgres):
    """Run the frozen statements of one migration for the engine of ``database``."""
    for statement in (postgres if engine_of(database) == "postgres" else sqlite):
        database.execute_sql(statement)


def available():
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name.startswith("m"))


def applied():
    """Names of the migrations recorded in ``schema_migration`` (empty before the first upgrade)."""
    if not db.table_exists(TABLE):
        return set()
    return {row[0] for row in db.execute_sql(f'SELECT "name" FROM "{TABLE}"').fetchall()}


def status():
    """{"applied": [...], "pending": [...], "unknown": [...]} (unknown: applied here, no module)."""
    with db.connection_context():
        done = applied()
    names = available()
    return {"applied": [n for n in names if n in done], "pending": [n for n in names if n not in done],
            "unknown": sorted(done - set(names))}


@contextmanager
def _upgrade_lock():
    if engine_of(db) != "postgres":
        yield  # SQLite: BEGIN IMMEDIATE per migration (see upgrade)
        return
    # a session lock on this thread's connection, held across the per-migration transactions; waiting
    # for it (and a long migration) may outlast the default statement timeout
    with patient(LOCK_TIMEOUT_SECONDS):
        db.execute_sql("SET lock_timeout = %s", (f"{LOCK_TIMEOUT_SECONDS}s",))
        db.execute_sql("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        try:
            yield
        finally:
            db.execute_sql("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
            db.execute_sql("RESET lock_timeout")


def _record(name):
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    db.execute_sql(f'INSERT INTO "{TABLE}" ("name", "applied_at") VALUES ({db.param}, {db.param})', (name, now))


def upgrade():
    """Apply every pending migration, each in its own transaction; returns the names applied."""
    with db.connection_context(), _upgrade_lock():
        with write_transaction():
            db.execute_sql(_TABLE_DDL[engine_of(db)])
        ran = []
        for name in available():
            if name in applied():
                continue
            module = importlib.import_module(f"{__name__}.{name}")
            with write_transaction():
                # another process may have applied it meanwhile (SQLite: we now hold the write lock)
                if name in applied():
                    continue
                module.upgrade(db)
                _record(name)
            log.info("applied migration %s", name)
            ran.append(name)
        return ran
