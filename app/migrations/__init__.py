"""Versioned migrations: modules mNNNN_<name>.py with ``upgrade(db)``, applied once, in name order.

Number ranges per bounded context keep parallel work from colliding:
0000-0099 core, 0100 policy, 0200 ledger, 0300 membership, 0400 tickets, 0500 service, 0600 simulation.
"""
import importlib
import logging
import pkgutil

from app.db import db, write_transaction
from app.models.core import SchemaMigration

log = logging.getLogger(__name__)


def available():
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name.startswith("m"))


def applied():
    if not db.table_exists(SchemaMigration._meta.table_name):
        return set()
    return {m.name for m in SchemaMigration.select(SchemaMigration.name)}


def upgrade():
    """Apply every pending migration, each in its own transaction; returns the names applied."""
    with db.connection_context():
        db.create_tables([SchemaMigration], safe=True)
        done = applied()
        ran = []
        for name in available():
            if name in done:
                continue
            module = importlib.import_module(f"{__name__}.{name}")
            with write_transaction():
                # another process may have applied it meanwhile
                if SchemaMigration.get_or_none(SchemaMigration.name == name):
                    continue
                module.upgrade(db)
                SchemaMigration.create(name=name)
            log.info("applied migration %s", name)
            ran.append(name)
        return ran
