"""The ``patron`` command through its entry point ``app.cli.main``: db upgrade, apikey, demo, errors."""
import os
import re
import secrets
import tempfile

import pytest

from app.cli import main
from tests.conftest import BACKEND, PG_URL, FakeTerminal, Http


@pytest.fixture()
def fresh_db(app, database_url):
    """An empty database of the backend under test; the session database is re-bound afterwards."""
    from urllib.parse import quote

    from app.db import open_database
    schema = None
    tmpdir = tempfile.mkdtemp(prefix="patron-cli-")
    if BACKEND == "sqlite":
        url = "sqlite:///" + os.path.join(tmpdir, "fresh.db")
    else:
        import psycopg2
        schema = f"patron_cli_{secrets.token_hex(4)}"
        conn = psycopg2.connect(PG_URL)
        conn.autocommit = True
        conn.cursor().execute(f'CREATE SCHEMA "{schema}"')
        conn.close()
        sep = "&" if "?" in PG_URL else "?"
        url = f"{PG_URL}{sep}options={quote('-c search_path=' + schema)}"
    yield url
    from app.db import db
    if not db.is_closed():
        db.close()
    open_database(database_url, app.config["DB_MAX_CONNECTIONS"])
    if schema:
        from tests.conftest import _drop_schema
        _drop_schema(schema)


def test_db_upgrade_is_idempotent_and_recorded(fresh_db, capsys):
    from app.db import db
    from app.migrations import available
    from app.models.core import SchemaMigration
    assert main(["--database-url", fresh_db, "db", "upgrade"]) == 0
    first = capsys.readouterr().out
    assert f"applied {len(available())} migration(s)" in first
    assert main(["--database-url", fresh_db, "db", "upgrade"]) == 0
    assert "applied 0 migration(s) (up to date)" in capsys.readouterr().out
    with db.connection_context():
        assert sorted(m.name for m in SchemaMigration.select()) == available()
        assert db.table_exists("job_run") and db.table_exists("api_key")


def test_apikey_create_shows_the_key_once_and_it_works(app, server, capsys, database_url):
    assert main(["--database-url", database_url, "apikey", "create", "--name", "cli-test",
                 "--scopes", "policy:read, ledger:write"]) == 0
    out, err = capsys.readouterr()
    token = out.strip()
    assert re.fullmatch(r"ptr_[0-9a-f]{12}_[A-Za-z0-9_-]+", token)
    assert "shown once" in err and "ledger:write policy:read" in err
    assert Http(server, token).get("/v1/policies/active").status_code == 200
    key_id = token.split("_")[1]

    assert main(["--database-url", database_url, "apikey", "list"]) == 0
    listing = capsys.readouterr().out
    assert key_id in listing and "cli-test" in listing and token.split("_", 2)[2] not in listing

    assert main(["--database-url", database_url, "apikey", "revoke", key_id]) == 0
    assert capsys.readouterr().out.strip() == "revoked"
    assert Http(server, token).get("/v1/policies/active").status_code == 401
    assert main(["--database-url", database_url, "apikey", "revoke", "nosuchkey"]) == 1


def test_apikey_create_refuses_unknown_scopes(capsys, database_url):
    assert main(["--database-url", database_url, "apikey", "create", "--name", "x",
                 "--scopes", "ledger:write,money:print"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "money:print" in err


@pytest.mark.parametrize("argv, message", [
    (["--database-url", "sqlite://relative.db", "db", "upgrade"], "SQLite needs a file path"),
    (["--database-url", "oracle://x/y", "apikey", "list"], "unsupported scheme"),
])
def test_config_errors_exit_2_with_message(app, database_url, capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("configuration error: DATABASE_URL:") and message in err


def test_unreachable_database_is_a_clear_error(app, database_url, capsys):
    from app.db import open_database
    try:
        rc = main(["--database-url", "sqlite:////nonexistent-dir/x/patron.db", "db", "upgrade"])
    finally:
        open_database(database_url, app.config["DB_MAX_CONNECTIONS"])
    assert rc == 2 and "database error" in capsys.readouterr().err


def test_demo_upgrades_seeds_and_prints_a_working_key(fresh_db, capsys):
    from app.db import db
    from app.platform.auth import authenticate
    assert main(["--database-url", fresh_db, "demo", "--port", "8123"]) in (0, None)
    out = capsys.readouterr().out
    token = re.search(r"ptr_[0-9a-f]{12}_[A-Za-z0-9_-]+", out).group(0)
    assert "http://127.0.0.1:8123/v1/policies/active" in out
    with db.connection_context():
        assert authenticate(f"Bearer {token}")["scopes"] == frozenset({"admin"})
        assert db.table_exists("job_run")


def _free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(argv, env):
    import subprocess
    import sys
    import time

    import requests
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", *argv, "serve", "--port", str(port)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    # several gunicorn workers each import the app and compile the policy set: on a loaded 2-core CI
    # machine that takes tens of seconds (measured ~20 s at load 20); a hung start still fails
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if requests.get(base + "/healthz", timeout=5).status_code == 200:
                    return proc, base
            except requests.RequestException:
                time.sleep(0.2)
    except BaseException:
        _stop(proc)  # never leave a server behind
        raise
    proc.terminate()
    pytest.fail("patron serve did not come up: " + proc.communicate(timeout=30)[0][-2000:])


def _stop(proc):
    import subprocess
    proc.terminate()  # gunicorn: graceful shutdown on SIGTERM
    try:
        return proc.communicate(timeout=30)[0]
    except subprocess.TimeoutExpired:
        proc.kill()  # its workers exit when they see their parent gone
        return proc.communicate(timeout=10)[0]


def test_serve_runs_gunicorn_with_ticker_without_redis(database_url, admin_token):
    import requests
    env = {k: v for k, v in os.environ.items() if not k.startswith("PATRON_")}
    proc, base = _serve(["--database-url", database_url], env)
    try:
        r = requests.get(base + "/v1/policies/active", headers={"Authorization": f"Bearer {admin_token}"},
                         timeout=10)
        assert r.status_code == 200 and r.headers["Server"].startswith("gunicorn")
    finally:
        out = _stop(proc)
    assert "1 worker(s)" in out and "in-process with ticker" in out
    assert '"ticker started' in out


def test_serve_with_redis_runs_several_workers_and_merges_metrics(database_url, redis_url):
    import time

    import requests
    from prometheus_client.parser import text_string_to_metric_families
    env = {k: v for k, v in os.environ.items() if not k.startswith("PATRON_")}
    env["PATRON_REDIS_URL"] = redis_url
    proc, base = _serve(["--database-url", database_url], env)
    try:
        session = requests.Session()
        for _ in range(20):
            assert session.get(base + "/healthz", timeout=10).status_code == 200
        # a worker's first readiness check (database, policy, Redis) may outlast readyz's 2 s deadline while the
        # other workers still boot on a loaded machine ("error: timeout"); Redis must come up ok, not at once
        deadline = time.monotonic() + 60
        while (checks := requests.get(base + "/readyz", timeout=10).json()["checks"])["redis"] != "ok":
            assert checks["redis"] == "error: timeout" and time.monotonic() < deadline, checks
            time.sleep(0.5)
        text = requests.get(base + "/metrics", timeout=10).text
    finally:
        out = _stop(proc)
    assert "jobs on RQ" in out and "ticker started" not in out
    total = sum(s.value for f in text_string_to_metric_families(text) if f.name == "patron_http_requests"
                for s in f.samples if s.labels.get("route") == "/healthz" and s.name.endswith("_total"))
    assert total >= 21  # every request counted, whichever worker served it


def test_long_commands_draw_a_progress_bar_on_a_terminal_only(app, http, monkeypatch, capsys, database_url):
    """`simulate preview` (every member) and `membership run` (a job by hand): a bar on a terminal's stderr,
    none when piped or asked for --json, and never on stdout."""
    import json

    from app.db import db
    from app.models.membership import Member
    from tests.membership_factories import order, post
    post(http, order(f"bar-{secrets.token_hex(4)}", 10))
    with db.connection_context():
        members = Member.select().count()
    preview = ["--database-url", database_url, "simulate", "preview", "--at", "2099-01-01T00:00:00+08:00"]
    assert main(preview) == 0  # captured stderr: not a terminal
    out, err = capsys.readouterr()
    assert len(json.loads(out)["items"]) == members and f"{members}/{members}" not in err
    terminal = FakeTerminal()
    monkeypatch.setattr("sys.stderr", terminal)
    assert main(preview) == 0
    drawn = terminal.getvalue()
    assert "members" in drawn and f"{members}/{members}" in drawn, drawn[-500:]
    assert f"{members}/{members}" not in capsys.readouterr().out
    quiet = FakeTerminal()
    monkeypatch.setattr("sys.stderr", quiet)
    assert main(preview + ["--json"]) == 0
    assert quiet.getvalue() == ""  # --json: machine output, no bar


def test_a_membership_job_run_by_hand_draws_its_progress(fresh_db, monkeypatch, capsys):
    """On a database of its own (the job changes every member): one step per member on the terminal."""
    from app.db import db
    from app.models.membership import Member
    assert main(["--database-url", fresh_db, "demo", "--port", "8123"]) in (0, None)
    with db.connection_context():
        members = Member.select().count()
    assert members >= 1
    capsys.readouterr()
    terminal = FakeTerminal()
    monkeypatch.setattr("sys.stderr", terminal)
    assert main(["--database-url", fresh_db, "membership", "run", "deduct_growth"]) == 0
    assert '"deducted"' in capsys.readouterr().out
    drawn = terminal.getvalue()
    assert "deduct growth" in drawn and f"{members}/{members}" in drawn, drawn[-500:]


def test_stats_exports_match_the_api_and_draw_their_progress(app, http, monkeypatch, capsys, database_url):
    """`patron stats service|tickets`: the API's reports (JSON, or the same CSV with its BOM), a bar on a
    terminal only, and a bad date as one line with exit 2."""
    import json
    day = "2026-11-30"
    service = ["--database-url", database_url, "stats", "service", "--from", day, "--to", day, "--by", "agent"]
    assert main(service) == 0
    out, err = capsys.readouterr()
    api = http.get(f"/v1/service/stats?from={day}&to={day}&by=agent")
    assert api.status_code == 200, api.text
    assert json.loads(out) == api.json() and err == ""
    assert main(service + ["--csv"]) == 0
    csv_out = capsys.readouterr().out
    assert csv_out.startswith("\ufeffday,agent,group,channel,conversations")
    assert csv_out == http.get(f"/v1/service/stats?from={day}&to={day}&by=agent&format=csv").content.decode("utf-8")
    window = ["--from", "2026-11-01T00:00:00Z", "--to", "2026-12-01T00:00:00Z"]
    tickets = ["--database-url", database_url, "stats", "tickets", *window]
    terminal = FakeTerminal()
    monkeypatch.setattr("sys.stderr", terminal)
    assert main(tickets) == 0
    assert json.loads(capsys.readouterr().out) == http.get(
        "/v1/ticket-stats?from=2026-11-01T00:00:00Z&to=2026-12-01T00:00:00Z").json()
    assert "sections" in terminal.getvalue() and "6/6" in terminal.getvalue()
    quiet = FakeTerminal()
    monkeypatch.setattr("sys.stderr", quiet)
    assert main(tickets + ["--json"]) == 0 and quiet.getvalue() == ""
    drawn = FakeTerminal()
    monkeypatch.setattr("sys.stderr", drawn)
    assert main(service) == 0 and "conversations" in drawn.getvalue()
    bad = FakeTerminal()
    monkeypatch.setattr("sys.stderr", bad)
    assert main(["--database-url", database_url, "stats", "service", "--from", "2026-13-01"]) == 2
    assert bad.getvalue().count("\n") == 1 and "/query/from" in bad.getvalue(), bad.getvalue()
