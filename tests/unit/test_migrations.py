"""Migrations replay: an empty database upgraded from the first migration has exactly the models' schema."""
import peewee

from app import drift
from app.migrations import TABLE, available
from tests.migration_factories import empty_database, patron


def _models_schema(database):
    """The schema peewee builds straight from today's models (schema_migration included)."""
    models = drift.models()
    assert TABLE in {m._meta.table_name for m in models}
    with database.bind_ctx(models):
        database.create_tables(models)
    return drift.actual(database)


def test_upgrade_of_an_empty_database_matches_the_models_and_status_is_clean():
    with empty_database() as (url, database):
        status = patron(url, "db", "status")
        assert status.returncode == 1 and f"pending  {available()[0]}" in status.stdout
        up = patron(url, "db", "upgrade")
        assert up.returncode == 0, up.stderr[-3000:]
        assert f"applied {len(available())} migration(s)" in up.stdout
        # what the models declare: tables, columns (type, null), primary keys, indexes and uniques
        assert drift.check(database) == []
        status = patron(url, "db", "status")
        assert status.returncode == 0, status.stdout + status.stderr[-2000:]
        assert "no drift" in status.stdout and "pending" not in status.stdout
        assert patron(url, "db", "upgrade").stdout.startswith("applied 0 migration(s)")
        replayed = drift.actual(database)
    with empty_database() as (_, database):
        built = _models_schema(database)
    assert drift.compare(built, replayed) == []  # the catalogs themselves agree, not only our reading of models


def test_ledger_triggers_and_the_policy_row_are_created():
    with empty_database() as (url, database):
        assert patron(url, "db", "upgrade").returncode == 0
        if isinstance(database, peewee.PostgresqlDatabase):
            names = {r[0] for r in database.execute_sql(
                "SELECT t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = current_schema() AND NOT t.tgisinternal").fetchall()}
            assert names == {"ledger_journal_append_only", "ledger_entry_append_only"}
        else:
            names = {r[0] for r in database.execute_sql(
                "SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall()}
            assert names == {f"{t}_no_{e}" for t in ("ledger_journal", "ledger_entry") for e in ("update", "delete")}
        database.execute_sql("INSERT INTO ledger_journal (type, client, actor, created_at) "
                             "VALUES ('t', 'c', 'a', CURRENT_TIMESTAMP)")
        for statement in ("UPDATE ledger_journal SET actor = 'x'", "DELETE FROM ledger_journal"):
            try:
                with database.atomic():
                    database.execute_sql(statement)
                raise AssertionError(f"ledger_journal accepted {statement}")
            except (peewee.IntegrityError, peewee.InternalError, peewee.OperationalError) as exc:
                assert "append-only" in str(exc)
        assert database.execute_sql("SELECT id, version, seq FROM policy_active").fetchall() == [(1, None, 0)]


def test_drift_is_reported_with_a_non_zero_exit():
    with empty_database() as (url, database):
        assert patron(url, "db", "upgrade").returncode == 0
        database.execute_sql('DROP INDEX "ledger_lot_open"')
        database.execute_sql('ALTER TABLE "audit_log" ADD COLUMN "extra" TEXT')
        database.execute_sql('CREATE TABLE "stray" ("id" INTEGER PRIMARY KEY)')
        status = patron(url, "db", "status")
        assert status.returncode == 1
        assert "drift    table ledger_lot: partial index (account_id, expires_at) missing in the database" \
            in status.stdout
        assert "drift    table audit_log: column extra in the database, not in the model" in status.stdout
        assert "drift    table stray: in the database, declared by no model" in status.stdout

