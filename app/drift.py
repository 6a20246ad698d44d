"""Schema drift: the live database's tables, columns, primary keys and indexes compared with the models."""
import re

import peewee

from app.db import db
from app.migrations import TABLE as MIGRATIONS_TABLE, engine_of
from app.models import (core, jobs, knowledge, ledger, membership, outbox, policy, service, service_ops, simulation,
                        staff, tickets)

# Every model module, listed (a new context adds its module here and a migration creating its tables).
MODEL_MODULES = (core, jobs, staff, policy, ledger, membership, tickets, outbox, service, service_ops, knowledge,
                 simulation)

# DDL type names as peewee writes them -> PostgreSQL's format_type() spelling
_PG_TYPES = {
    "serial": "integer", "bigserial": "bigint", "integer": "integer", "int": "integer", "bigint": "bigint",
    "smallint": "smallint", "text": "text", "timestamp": "timestamp without time zone",
    "timestamptz": "timestamp with time zone", "boolean": "boolean", "bool": "boolean", "real": "real",
    "double precision": "double precision", "date": "date", "time": "time without time zone",
    "bytea": "bytea", "uuid": "uuid", "jsonb": "jsonb", "json": "json",
}


def models():
    """Every model class declared in MODEL_MODULES (the schema the code expects)."""
    out = []
    for module in MODEL_MODULES:
        for value in vars(module).values():
            if (isinstance(value, type) and issubclass(value, peewee.Model) and value.__module__ == module.__name__
                    and value._meta.database is db and value not in out):
                out.append(value)
    return out


def _pg_type(ddl_type):
    t = re.sub(r"\s+", " ", ddl_type.strip().lower())
    m = re.fullmatch(r"(varchar|char|numeric|decimal)\s*\((.*)\)", t)
    if m:
        name = {"varchar": "character varying", "char": "character", "decimal": "numeric"}.get(m[1], m[1])
        return f"{name}({m[2].replace(' ', '')})"
    return _PG_TYPES.get(t, t)


def _norm(engine, ddl_type):
    if engine == "postgres":
        return _pg_type(ddl_type)
    return re.sub(r"\s+", "", ddl_type.upper())


def expected(database=None):
    """{table: {"columns": {name: (type, null)}, "pk": (cols), "indexes": {(cols, unique, partial)}}}."""
    database = database or db.obj
    engine = engine_of(database)
    out = {MIGRATIONS_TABLE: {
        "columns": {"name": (_norm(engine, "VARCHAR(200)"), False),
                    "applied_at": (_norm(engine, "TIMESTAMP" if engine == "postgres" else "DATETIME"), False)},
        "pk": ("name",), "indexes": set()}}
    for model in models():
        meta = model._meta
        columns = {}
        for field in meta.sorted_fields:
            ctx = database.get_sql_context()
            columns[field.column_name] = (_norm(engine, ctx.sql(field.ddl_datatype(ctx)).query()[0]), bool(field.null))
        pk = tuple(f.column_name for f in meta.get_primary_keys())
        indexes = set()
        for index in meta.fields_to_index():
            cols = tuple(e.column_name if isinstance(e, peewee.Field) else str(e) for e in index._expressions)
            indexes.add((cols, bool(index._unique), index._where is not None))
        out[meta.table_name] = {"columns": columns, "pk": pk, "indexes": indexes}
    return out


def actual(database=None):
    """The same shape as ``expected()``, read from the database's catalog."""
    database = database or db.obj
    if engine_of(database) == "postgres":
        return _actual_pg(database)
    return _actual_sqlite(database)


def _actual_sqlite(database):
    out = {}
    tables = [r[0] for r in database.execute_sql(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'").fetchall()]
    for table in tables:
        info = database.execute_sql(f'PRAGMA table_info("{table}")').fetchall()
        columns = {r[1]: (_norm("sqlite", r[2]), not r[3] and not r[5]) for r in info}
        pk = tuple(r[1] for r in sorted((r for r in info if r[5]), key=lambda r: r[5]))
        indexes = set()
        for _, name, unique, origin, partial in database.execute_sql(f'PRAGMA index_list("{table}")').fetchall():
            if origin == "pk":
                continue
            cols = tuple(r[2] for r in sorted(database.execute_sql(f'PRAGMA index_info("{name}")').fetchall()))
            indexes.add((cols, bool(unique), bool(partial)))
        out[table] = {"columns": columns, "pk": pk, "indexes": indexes}
    return out


def _actual_pg(database):
    out = {}
    rows = database.execute_sql(
        "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
        "WHERE c.relkind = 'r' AND n.nspname = current_schema() ORDER BY c.relname, a.attnum").fetchall()
    for table, column, type_, null in rows:
        out.setdefault(table, {"columns": {}, "pk": (), "indexes": set()})["columns"][column] = (type_, null)
    rows = database.execute_sql(
        "SELECT t.relname, i.indisunique, i.indisprimary, i.indpred IS NOT NULL, "
        "ARRAY(SELECT a.attname FROM unnest(i.indkey) WITH ORDINALITY k(attnum, ord) "
        "      JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum ORDER BY k.ord) "
        "FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace "
        "WHERE n.nspname = current_schema() AND t.relkind = 'r'").fetchall()
    for table, unique, primary, partial, cols in rows:
        entry = out.setdefault(table, {"columns": {}, "pk": (), "indexes": set()})
        if primary:
            entry["pk"] = tuple(cols)
        else:
            entry["indexes"].add((tuple(cols), bool(unique), bool(partial)))
    return out


def _index_text(index):
    cols, unique, partial = index
    return f"{'unique ' if unique else ''}{'partial ' if partial else ''}index ({', '.join(cols)})"


def compare(want, have):
    """Differences between two schemas (``expected()`` vs ``actual()``), one readable line each."""
    problems = []
    for table in sorted(set(want) | set(have)):
        if table not in have:
            problems.append(f"table {table}: declared by the models, missing in the database")
            continue
        if table not in want:
            problems.append(f"table {table}: in the database, declared by no model")
            continue
        w, h = want[table], have[table]
        for col in sorted(set(w["columns"]) | set(h["columns"])):
            if col not in h["columns"]:
                problems.append(f"table {table}: column {col} missing in the database")
            elif col not in w["columns"]:
                problems.append(f"table {table}: column {col} in the database, not in the model")
            else:
                (wt, wn), (ht, hn) = w["columns"][col], h["columns"][col]
                if wt != ht:
                    problems.append(f"table {table}: column {col}: type {ht} in the database, {wt} in the model")
                if wn != hn:
                    problems.append(f"table {table}: column {col}: {'NULL' if hn else 'NOT NULL'} in the "
                                    f"database, {'NULL' if wn else 'NOT NULL'} in the model")
        if w["pk"] != h["pk"]:
            problems.append(f"table {table}: primary key {h['pk']} in the database, {w['pk']} in the model")
        for index in sorted(w["indexes"] - h["indexes"]):
            problems.append(f"table {table}: {_index_text(index)} missing in the database")
        for index in sorted(h["indexes"] - w["indexes"]):
            problems.append(f"table {table}: {_index_text(index)} in the database, not in the model")
    return problems


def check(database=None):
    """Drift of the bound database (call inside a connection): a list of differences, empty when none."""
    return compare(expected(database), actual(database))
