"""Migrations are frozen: the statements each one runs (its SQLITE* and POSTGRES* lists) never change once
released, so a database upgraded last year and one upgraded today end with the same schema. A change to a
released migration, or to ``sqlite_types`` (which derives SQLite's statements from PostgreSQL's), fails here;
a schema change is a new migration. A new migration is pinned by adding the line this test prints."""
import hashlib
import importlib
import json

import app.migrations as migrations

PINNED = {
    "m0001_core": "0f3c1e7a8edb025d",
    "m0010_jobs": "e2e639229f30974c",
    "m0050_staff": "4b828ab64eb05a4a",
    "m0051_identity": "1ae0151c10324ebd",
    "m0100_policy": "2737ce460239dafb",
    "m0200_ledger": "050b4bc7640d048d",
    "m0201_ledger_lot_use": "793c412d46afc1bf",
    "m0202_ledger_entry_indexes": "e9a7451b7a74bac8",
    "m0300_membership": "40e5ce49a4a9c343",
    "m0301_membership_cashback": "e7475dd679360d13",
    "m0302_membership_loop": "3d6c63fa94e4d2f7",
    "m0400_tickets": "c84e456dda8744ab",
    "m0401_outbox": "fc7ac6e852b0fc4b",
    "m0402_webhook_secrets": "ef89ed6969d9143b",
    "m0410_ticket_approval_credential": "54f81ff96b7dba3e",
    "m0500_service": "7e333e395b57ef58",
    "m0520_knowledge": "a6393c3ec25ab030",
    "m0521_service_compensation": "170c78c005b03492",
    "m0522_service_actions": "de8b0b57792304d6",
    "m0523_service_due_indexes": "0f10ba5663e50a79",
    "m0530_service_operations": "0d98ad36fd465e09",
    "m0540_service_alerts": "a6f712c1b637ebde",
    "m0541_service_conversation_indexes": "452ba4689fa9f209",
    "m0550_compensation_approval_ticket": "619082c5c5076d43",
    "m0600_simulation": "124c50633f217e12",
}


def _digest(name):
    module = importlib.import_module(f"app.migrations.{name}")
    lists = {k: list(v) for k, v in sorted(vars(module).items())
             if k.startswith(("SQLITE", "POSTGRES")) and isinstance(v, list)}
    assert lists, f"{name} runs no SQLITE/POSTGRES statement lists"
    return hashlib.sha256(json.dumps(lists, ensure_ascii=False).encode()).hexdigest()[:16]


def test_every_migration_runs_the_statements_it_was_released_with():
    changed = [f"{name}: pinned {PINNED[name]}, now {_digest(name)}"
               for name in migrations.available() if name in PINNED and _digest(name) != PINNED[name]]
    assert not changed, "released migrations changed (write a new migration instead): " + "; ".join(changed)


def test_every_migration_is_pinned():
    new = [f'    "{name}": "{_digest(name)}",' for name in migrations.available() if name not in PINNED]
    assert not new, "pin the new migrations in PINNED:\n" + "\n".join(new)
    assert set(PINNED) <= set(migrations.available()), "a released migration was deleted"


def test_sqlite_types_maps_postgres_column_types_as_peewee_does():
    assert migrations.sqlite_types([
        'CREATE TABLE "t" ("id" SERIAL NOT NULL PRIMARY KEY, "a" BIGINT, "b" TIMESTAMP NOT NULL, '
        '"c" BOOLEAN NOT NULL, "d" DOUBLE PRECISION, "bigint_count" INTEGER)']) == [
        'CREATE TABLE "t" ("id" INTEGER NOT NULL PRIMARY KEY, "a" INTEGER, "b" DATETIME NOT NULL, '
        '"c" INTEGER NOT NULL, "d" REAL, "bigint_count" INTEGER)']
