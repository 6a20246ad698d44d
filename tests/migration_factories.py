"""Empty databases of the test backend for migration tests, reached without touching the app's db proxy."""
import os
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

from playhouse.db_url import connect

from tests.conftest import _database_url, _drop_schema

ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def empty_database():
    """(url, peewee Database) of a new empty database (SQLite file / PostgreSQL schema), dropped after."""
    tmpdir = tempfile.mkdtemp(prefix="patron-mig-")
    url, schema = _database_url(tmpdir)
    database = connect(url)
    try:
        yield url, database
    finally:
        database.close()
        if schema:
            _drop_schema(schema)


def patron(url, *args, wait=True):
    """``patron --database-url <url> <args>`` in its own process (a CompletedProcess, or a Popen)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "app.cli", "--database-url", url, *args]
    if not wait:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
