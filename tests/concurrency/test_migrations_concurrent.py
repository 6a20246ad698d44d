"""Concurrent `patron db upgrade` runs are serialised by a database lock: each migration is applied once."""
import re
import time

import peewee

from app import drift
from app.migrations import LOCK_KEY, available
from tests.migration_factories import empty_database, patron


def _applied(proc):
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    return int(re.search(r"applied (\d+) migration", out).group(1))


def test_two_upgrades_at_once_apply_every_migration_exactly_once():
    with empty_database() as (url, database):
        runs = [patron(url, "db", "upgrade", wait=False) for _ in range(2)]
        counts = [_applied(p) for p in runs]
        assert sum(counts) == len(available()), counts  # each migration by exactly one of them
        rows = database.execute_sql('SELECT name FROM "schema_migration" ORDER BY name').fetchall()
        assert [r[0] for r in rows] == available()
        assert drift.check(database) == []


def test_an_upgrade_waits_for_the_lock_held_by_another_runner():
    with empty_database() as (url, database):
        postgres = isinstance(database, peewee.PostgresqlDatabase)
        if postgres:  # what a running `patron db upgrade` holds for its whole run
            database.execute_sql("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        else:  # SQLite: a runner inside BEGIN IMMEDIATE (on the WAL database patron makes)
            database.execute_sql("PRAGMA journal_mode=wal")
            database.execute_sql("BEGIN IMMEDIATE")
        proc = patron(url, "db", "upgrade", wait=False)
        try:
            time.sleep(4)
            assert proc.poll() is None, proc.communicate()
            assert database.get_tables() == []  # it has not started
        finally:
            if postgres:
                database.execute_sql("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
            else:
                database.execute_sql("ROLLBACK")
        assert _applied(proc) == len(available())
        assert drift.check(database) == []
