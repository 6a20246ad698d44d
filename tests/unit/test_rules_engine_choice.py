"""The reference engine keeps durable_rules out: never imported by check, compile, explain or the app."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]


def patron_without_durable(tmp_path, *args, env=None):
    """The patron CLI in a process where durable_rules cannot be imported (tests/no_durable.py)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), PATRON_DATABASE_URL=f"sqlite:///{tmp_path}/p.db", **(env or {}))
    return subprocess.run([sys.executable, "-m", "tests.no_durable", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_policy_check_and_explain_never_import_durable_with_the_reference_engine(tmp_path):
    proc = patron_without_durable(tmp_path, "policy", "check")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "OK:" in proc.stderr and "example(s)" in proc.stderr
    facts = tmp_path / "facts.json"
    facts.write_text(json.dumps({"ticket": {"type": "complaint", "text": "我要投诉"}}), encoding="utf-8")
    proc = patron_without_durable(tmp_path, "policy", "explain", "ticket_routing", str(facts), "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert out["engine"] == "reference" and out["engines_agree"] is None


def test_config_file_selects_the_reference_engine(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("rules_engine: reference\n", encoding="utf-8")
    proc = patron_without_durable(tmp_path, "--keep-engine", "policy", "check", env={"PATRON_CONFIG": str(config)})
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_durable_engine_without_durable_rules_is_a_clear_configuration_error(tmp_path):
    proc = patron_without_durable(tmp_path, "--keep-engine", "policy", "check",
                                  env={"PATRON_RULES_ENGINE": "durable"})
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "durable_rules is not installed" in proc.stderr and "reference" in proc.stderr


def test_rules_engine_setting_is_validated(tmp_path):
    (tmp_path / "config.yaml").write_text("rules_engine: reference\n", encoding="utf-8")
    assert load_config(str(tmp_path), environ={})["RULES_ENGINE"] == "reference"
    assert load_config(str(tmp_path), environ={"PATRON_RULES_ENGINE": "durable"})["RULES_ENGINE"] == "durable"
    with pytest.raises(ConfigError, match="PATRON_RULES_ENGINE: expected durable or reference"):
        load_config(str(tmp_path), environ={"PATRON_RULES_ENGINE": "fast"})
