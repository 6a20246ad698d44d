"""app.db on PostgreSQL: BEGIN travels with a transaction's first statement, and a transaction stays one."""
import pytest

from app.db import db
from tests.conftest import BACKEND

pg_only = pytest.mark.skipif(BACKEND != "postgres", reason="the deferred BEGIN is PostgreSQL's pool")


@pg_only
def test_begin_goes_with_the_first_statement_and_rollback_undoes_it(db_conn):
    from psycopg2.extensions import TRANSACTION_STATUS_IDLE, TRANSACTION_STATUS_INTRANS
    conn = db.connection()
    db.execute_sql("CREATE TEMPORARY TABLE t_deferred_begin (n integer)")
    with db.atomic() as txn:
        assert conn.get_transaction_status() == TRANSACTION_STATUS_IDLE  # nothing sent yet
        db.execute_sql("INSERT INTO t_deferred_begin VALUES (1)")
        assert conn.get_transaction_status() == TRANSACTION_STATUS_INTRANS
        with db.atomic():  # a savepoint inside
            db.execute_sql("INSERT INTO t_deferred_begin VALUES (2)")
        txn.rollback()
    assert conn.get_transaction_status() == TRANSACTION_STATUS_IDLE
    assert db.execute_sql("SELECT count(*) FROM t_deferred_begin").fetchone()[0] == 0
    with db.atomic():
        db.execute_sql("INSERT INTO t_deferred_begin VALUES (3)")
        rows = db.execute_sql("SELECT n FROM t_deferred_begin").fetchall()
    assert rows == [(3,)]
    with db.atomic():  # an empty transaction sends nothing, and leaves nothing pending
        pass
    assert conn.get_transaction_status() == TRANSACTION_STATUS_IDLE
    assert not getattr(conn, "pending_begin", None)
    db.execute_sql("DROP TABLE t_deferred_begin")


@pg_only
def test_a_failed_first_statement_leaves_no_transaction_open(db_conn):
    import peewee
    from psycopg2.extensions import TRANSACTION_STATUS_IDLE
    with pytest.raises(peewee.ProgrammingError):
        with db.atomic():
            db.execute_sql("SELECT * FROM no_such_table_deferred_begin")
    assert db.connection().get_transaction_status() == TRANSACTION_STATUS_IDLE
    assert db.execute_sql("SELECT 1").fetchone() == (1,)
