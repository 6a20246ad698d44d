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


@pg_only
def test_a_deferred_write_rides_with_the_next_statement_or_the_commit(db_conn):
    from psycopg2.extensions import TRANSACTION_STATUS_IDLE
    conn = db.connection()
    db.execute_sql("CREATE TEMPORARY TABLE t_deferred_write (n integer, s text)")
    with db.atomic():  # only a deferred write: BEGIN, the write and COMMIT go together, at the commit
        db.obj.execute_later("INSERT INTO t_deferred_write VALUES (%s, %s)", [1, "50%"])
        assert conn.get_transaction_status() == TRANSACTION_STATUS_IDLE  # nothing sent yet
        assert conn.pending_write
    assert not getattr(conn, "pending_write", None)
    with db.atomic():  # the next statement carries it (its own % placeholders still work), and sees it
        db.execute_sql("SELECT 1")
        db.obj.execute_later("INSERT INTO t_deferred_write VALUES (%s, %s)", [2, "100%"])
        rows = db.execute_sql("SELECT n, s FROM t_deferred_write WHERE s LIKE %s ORDER BY n", ["%\\%"]).fetchall()
        assert rows == [(1, "50%"), (2, "100%")]
    with db.atomic() as txn:  # a rollback drops it unsent
        db.obj.execute_later("INSERT INTO t_deferred_write VALUES (%s, %s)", [3, "x"])
        txn.rollback()
    assert not getattr(conn, "pending_write", None)
    assert db.execute_sql("SELECT count(*) FROM t_deferred_write WHERE n = 3").fetchone() == (0,)
    db.execute_sql("DROP TABLE t_deferred_write")


@pg_only
def test_a_failing_deferred_write_fails_the_commit_and_nothing_stays(db_conn):
    import peewee
    from psycopg2.extensions import TRANSACTION_STATUS_IDLE
    db.execute_sql("CREATE TEMPORARY TABLE t_deferred_fail (n integer PRIMARY KEY)")
    db.execute_sql("INSERT INTO t_deferred_fail VALUES (1)")
    with pytest.raises(peewee.IntegrityError):
        with db.atomic():
            db.execute_sql("INSERT INTO t_deferred_fail VALUES (2)")
            db.obj.execute_later("INSERT INTO t_deferred_fail VALUES (%s)", [1])  # a duplicate
    assert db.connection().get_transaction_status() == TRANSACTION_STATUS_IDLE
    assert db.execute_sql("SELECT n FROM t_deferred_fail ORDER BY n").fetchall() == [(1,)]
    db.execute_sql("DROP TABLE t_deferred_fail")


def test_a_retried_transaction_is_counted_in_the_metric_by_cause(db_conn):
    import peewee

    from app.db import RETRIES, transactional
    from app.metrics import REGISTRY
    calls = []

    def metric():
        return REGISTRY.get_sample_value("patron_db_transaction_retries_total", {"cause": "busy"})

    before, before_metric = RETRIES["busy"], metric()

    @transactional()
    def flaky():
        calls.append(1)
        if len(calls) == 1:
            raise peewee.OperationalError("database is locked")
        return "done"

    assert flaky() == "done" and len(calls) == 2
    assert RETRIES["busy"] - before == 1
    assert metric() - before_metric == 1
