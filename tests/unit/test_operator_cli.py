"""Operator-facing CLI behaviour: holiday data for calendars, one-line errors, --json, the reused demo key."""
import json
import re
import shutil
import subprocess
import sys

from tests.instance import ROOT


def run(*argv, env=None):
    return subprocess.run([sys.executable, "-m", "app.cli", *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=180, env=env)


def test_shipped_calendar_agrees_with_the_holiday_package_for_2026_and_lists_2027():
    import yaml

    from app.platform import holidays
    doc = yaml.safe_load((ROOT / "policies" / "calendar.yaml").read_text(encoding="utf-8"))
    business = doc["calendars"]["business"]
    assert holidays.compare(business, 2026) == []
    assert "2026-02-23" in business["holidays"] and "2026-01-04" in business["workdays"]
    assert holidays.compare(business, 2027) == []  # provisional data: the fixed-rule holidays
    assert any(d.startswith("2027-02") for d in business["holidays"])  # Spring Festival 2027


def test_calendar_suggest_prints_policy_yaml_for_a_year():
    import yaml
    out = run("calendar", "suggest", "--year", "2026")
    assert out.returncode == 0, out.stderr
    doc = yaml.safe_load(out.stdout)
    assert doc["kind"] == "calendar"
    business = doc["calendars"]["business"]
    assert "2026-02-23" in business["holidays"] and "2026-01-04" in business["workdays"]
    assert "2026-02-21" not in business["holidays"]  # a Saturday: closed anyway, not listed
    assert "holidays 0." in out.stdout.splitlines()[0]


def test_policy_check_warns_when_the_coming_year_is_missing(tmp_path):
    from app.platform import clock
    year = clock.now().year
    shutil.copytree(ROOT / "policies", tmp_path / "policies")
    shutil.copytree(ROOT / "rules", tmp_path / "rules")
    cal = tmp_path / "policies" / "calendar.yaml"
    text = cal.read_text(encoding="utf-8")
    # drop every date of the coming year from the calendar
    cal.write_text(re.sub(rf'"{year + 1}-\d\d-\d\d",?\s*', "", text), encoding="utf-8")
    out = run("policy", "check", str(tmp_path))
    assert out.returncode == 0, out.stdout + out.stderr  # a warning, not an error
    assert f"warning: policies/calendar.yaml: calendars.business: {year + 1} holidays missing" in out.stderr \
        or f"no holidays or make-up workdays for {year + 1}" in out.stderr, out.stderr
    assert "calendars.always" not in out.stderr  # 24x7 calendars are not compared


def test_expected_cli_errors_are_one_line_with_an_exit_code(tmp_path, database_url):
    out = run("--database-url", database_url, "policy", "explain", "demo_risk", str(tmp_path / "missing.json"))
    assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    out = run("--database-url", database_url, "apikey", "create", "--name", "x", "--scopes", "nope")
    assert out.returncode == 2 and "Traceback" not in out.stderr and "unknown scope" in out.stderr


def test_apikey_list_json(database_url, admin_token):
    out = run("--database-url", database_url, "apikey", "list", "--json")
    assert out.returncode == 0, out.stderr
    keys = json.loads(out.stdout)
    mine = [k for k in keys if k["id"] == admin_token.split("_")[1]]
    assert mine and mine[0]["scopes"] == ["admin"] and mine[0]["revoked_at"] is None
    assert {"id", "name", "scopes", "created_at", "revoked_at"} <= set(mine[0])


def test_demo_reuses_its_key_instead_of_adding_admin_keys(fresh_database_url):
    import os
    env = {k: v for k, v in os.environ.items() if not k.startswith("PATRON_")}
    env["PATRON_DATABASE_URL"] = fresh_database_url
    first = run("demo", "--port", "0", env=env)
    second = run("demo", "--port", "0", env=env)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    key1 = re.search(r"export PATRON_KEY=(ptr_\S+)", first.stdout).group(1)
    key2 = re.search(r"export PATRON_KEY=(ptr_\S+)", second.stdout).group(1)
    assert key1 == key2 and "the same as last time" in second.stdout
    listed = json.loads(run("apikey", "list", "--json", env=env).stdout)
    assert [k for k in listed if k["name"] == "demo" and not k["revoked_at"]] == \
        [k for k in listed if k["id"] == key1.split("_")[1]]
