"""Deferred writes of one member event: rows collected while it is applied, written at its end in one round trip."""
import contextlib
import threading

from app.db import db, is_postgres
from app.platform import sql as fastsql

_local = threading.local()


@contextlib.contextmanager
def deferred():
    """Collect ``insert``/``statement`` writes made inside; write them on a clean exit, drop them on an error.

    Rows are grouped per table into multi-row INSERTs; on PostgreSQL all of them (and the statements)
    go in one data-modifying WITH statement, on SQLite one statement each (no round trip to save).
    Only for writes nothing inside reads back (journal rows, the stored event, the member snapshot).
    """
    outer = getattr(_local, "batch", None)
    _local.batch = batch = ({}, [])
    try:
        yield
    finally:
        _local.batch = outer
    _flush(*batch)


def active():
    return getattr(_local, "batch", None) is not None


def insert(model, row):
    """INSERT one row (dict of field name -> value) now, or at the end of the open ``deferred()`` block."""
    batch = getattr(_local, "batch", None)
    if batch is None:
        fastsql.insert(model, [row])
        return
    batch[0].setdefault((model, tuple(row)), []).append(row)


def statement(sql, params):
    """Run an UPDATE now, or at the end of the open ``deferred()`` block (plain UPDATE, no RETURNING)."""
    batch = getattr(_local, "batch", None)
    if batch is None:
        db.execute_sql(sql, params)
        return
    batch[1].append((sql, list(params)))


def _insert_sql(model, rows):
    defaults = model._meta.get_default_dict()
    names = tuple(rows[0]) + tuple(k for k in defaults if k not in rows[0])
    fields = [model._meta.fields[n] for n in names]
    p = db.obj.param
    cols = ", ".join(f'"{f.column_name}"' for f in fields)
    one = "(" + ", ".join([p] * len(fields)) + ")"
    sql = f'INSERT INTO "{model._meta.table_name}" ({cols}) VALUES ' + ", ".join([one] * len(rows))
    params = [f.db_value(r[f.name] if f.name in r else defaults.get(f.name)) for r in rows for f in fields]
    return sql, params


def _flush(groups, statements):
    parts = [_insert_sql(model, rows) for (model, _), rows in groups.items()] + statements
    if not parts:
        return
    if is_postgres() and len(parts) > 1:
        # Data-modifying CTEs always run to completion, referenced or not.
        head = ", ".join(f"w{i} AS ({sql})" for i, (sql, _) in enumerate(parts[:-1]))
        db.execute_sql(f"WITH {head} {parts[-1][0]}", [v for _, params in parts for v in params])
        return
    for sql, params in parts:
        db.execute_sql(sql, params)
