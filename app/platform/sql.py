"""Hot-path SQL without peewee query building: each INSERT/SELECT shape is built once per table and row count.

Also deferred writes: rows and UPDATEs collected while one unit of work runs (a member event) and written
at its end in one round trip (``deferred``, ``insert_later``, ``statement``).
"""
import contextlib
import sqlite3
import threading

from app.db import db, is_postgres

_sql = {}


def _columns(model, names):
    fields = model._meta.fields
    return [fields[n] for n in names]


def _insert_sql(model, names, nrows, returning):
    key = (type(db.obj), model, names, nrows, returning)
    sql = _sql.get(key)
    if sql is None:
        param = db.obj.param
        cols = ", ".join(f'"{f.column_name}"' for f in _columns(model, names))
        row = "(" + ", ".join([param] * len(names)) + ")"
        sql = f'INSERT INTO "{model._meta.table_name}" ({cols}) VALUES ' + ", ".join([row] * nrows)
        if returning:
            sql += " RETURNING " + ", ".join(f'"{model._meta.fields[n].column_name}"' for n in returning)
        if len(_sql) > 512:  # shapes are few (rows per create are bounded); never grow without limit
            _sql.clear()
        _sql[key] = sql
    return sql


def _values(model, rows):
    """(column names, flat parameters) of ``rows``; fields they leave out get the model's defaults."""
    defaults = model._meta.get_default_dict()
    names = tuple(rows[0]) + tuple(k for k in defaults if k not in rows[0])
    fields = _columns(model, names)
    params = []
    for r in rows:
        params.extend(f.db_value(r[f.name] if f.name in r else defaults.get(f.name)) for f in fields)
    return names, params


def insert(model, rows, returning=None):
    """INSERT ``rows`` (dicts of field name -> Python value, same keys each) in one statement.

    Fields the rows leave out get the model's defaults, as peewee's own insert would give them.

    Args:
        model: the peewee model.
        rows: list of dicts with identical keys.
        returning: field names to return (RETURNING; on SQLite < 3.35 one INSERT per row instead), or None.

    Returns:
        list of tuples (the returned columns, in row order) or None.
    """
    if not rows:
        return [] if returning else None
    names, params = _values(model, rows)
    if returning and not _returning_ok():
        # SQLite before 3.35 has no RETURNING: one INSERT per row, the id from lastrowid
        out, width = [], len(names)
        for i, r in enumerate(rows):
            rowid = db.execute_sql(_insert_sql(model, names, 1, ()), params[i * width:(i + 1) * width]).lastrowid
            out.append(tuple(rowid if n == "id" else r[n] for n in returning))
        return out
    cursor = db.execute_sql(_insert_sql(model, names, len(rows), tuple(returning or ())), params)
    return cursor.fetchall() if returning else None


def insert_one_with(model, row, other_model, other_row):
    """INSERT ``row`` (returning its id) and ``other_row`` of another table: one round trip on PostgreSQL
    (``WITH o AS (INSERT ...) INSERT ... RETURNING id``), two local statements on SQLite.

    For hot paths that write a row and its companion (an event and the decision that explains it).
    """
    if not is_postgres():
        insert(other_model, [other_row])
        return insert_one(model, row)
    other_names, other_params = _values(other_model, [other_row])
    names, params = _values(model, [row])
    key = (type(db.obj), "with", model, names, other_model, other_names)
    sql = _sql.get(key)
    if sql is None:
        sql = (f'WITH "o" AS ({_insert_sql(other_model, other_names, 1, ())}) '
               + _insert_sql(model, names, 1, ("id",)))
        if len(_sql) > 512:
            _sql.clear()
        _sql[key] = sql
    return db.execute_sql(sql, other_params + params).fetchone()[0]


def _returning_ok():
    return is_postgres() or sqlite3.sqlite_version_info >= (3, 35)


def insert_one(model, row):
    """INSERT one row; returns its id."""
    return insert(model, [row], returning=("id",))[0][0]


def select_one(model, columns, where):
    """``SELECT columns FROM model WHERE f1 = v1 AND ... LIMIT 1`` -> tuple or None (``where``: field -> value)."""
    names = tuple(where)
    key = (type(db.obj), model, "select", tuple(columns), names)
    sql = _sql.get(key)
    if sql is None:
        fields = model._meta.fields
        cond = " AND ".join(f'"{fields[n].column_name}" = {db.obj.param}' for n in names)
        cols = ", ".join(f'"{fields[c].column_name}"' for c in columns)
        sql = f'SELECT {cols} FROM "{model._meta.table_name}" WHERE {cond} LIMIT 1'
        _sql[key] = sql
    fields = model._meta.fields
    return db.execute_sql(sql, [fields[n].db_value(where[n]) for n in names]).fetchone()


# --------------------------------------------------------------------------- deferred writes

_local = threading.local()


@contextlib.contextmanager
def deferred():
    """Collect ``insert_later``/``statement`` writes made inside; write them on a clean exit, drop them on an error.

    Rows are grouped per table into multi-row INSERTs; on PostgreSQL all of them (and the statements)
    go in one data-modifying WITH statement, which inside a transaction travels with the transaction's
    next statement or its COMMIT (no round trip of its own; its error is raised there); on SQLite one
    statement each (no round trip to save). Only for writes nothing inside reads back (journal rows,
    the stored event, the member snapshot).
    """
    outer = getattr(_local, "batch", None)
    _local.batch = batch = ({}, [])
    try:
        yield
    finally:
        _local.batch = outer
    _flush(*batch)


def active():
    """True inside ``deferred()``."""
    return getattr(_local, "batch", None) is not None


def insert_later(model, row):
    """INSERT one row (dict of field name -> value) now, or at the end of the open ``deferred()`` block."""
    batch = getattr(_local, "batch", None)
    if batch is None:
        insert(model, [row])
        return
    batch[0].setdefault((model, tuple(row)), []).append(row)


def statement(sql, params):
    """Run an UPDATE now, or at the end of the open ``deferred()`` block (plain UPDATE, no RETURNING)."""
    batch = getattr(_local, "batch", None)
    if batch is None:
        db.execute_sql(sql, params)
        return
    batch[1].append((sql, list(params)))


def _flush(groups, statements):
    parts = []
    for (model, _), rows in groups.items():
        names, params = _values(model, rows)
        parts.append((_insert_sql(model, names, len(rows), ()), params))
    parts += statements
    if not parts:
        return
    if is_postgres():
        # Data-modifying CTEs always run to completion, referenced or not. The statement rides with the
        # transaction's next statement or its COMMIT (app.db._Pool.execute_later): no round trip of its own.
        if len(parts) > 1:
            head = ", ".join(f"w{i} AS ({sql})" for i, (sql, _) in enumerate(parts[:-1]))
            parts = [(f"WITH {head} {parts[-1][0]}", [v for _, params in parts for v in params])]
        later = getattr(db.obj, "execute_later", None)
        if later is not None:
            later(*parts[0])
            return
    for sql, params in parts:
        db.execute_sql(sql, params)


# --------------------------------------------------------------------------- hand-written statements

def sql_of(text):
    """Hand-written SQL written with ``?`` placeholders, in this engine's parameter style (translated once).

    The text must hold no other ``?`` and no ``%`` (psycopg2 reads ``%`` as a placeholder).
    """
    key = (type(db.obj), "text", text)
    sql = _sql.get(key)
    if sql is None:
        sql = text.replace("?", db.obj.param)
        if len(_sql) > 512:
            _sql.clear()
        _sql[key] = sql
    return sql


def execute(text, params=()):
    """Run a hand-written statement now (see ``sql_of``); returns the cursor."""
    return db.execute_sql(sql_of(text), list(params))


def rows(model, text, params=()):
    """Model instances from a hand-written SELECT (columns named like the model's), skipping query building."""
    return list(model.raw(sql_of(text), *params))
