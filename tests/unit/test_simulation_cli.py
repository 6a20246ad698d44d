"""`patron simulate`: generate a history, run a simulation from files, preview as CSV (real subprocesses)."""
import json
import os
import subprocess
import sys

from app.config import ROOT


def _patron(tmp_path, *args):
    env = {**os.environ, "PATRON_DATABASE_URL": "sqlite:///" + str(tmp_path / "cli.db"), "PATRON_LOG_LEVEL": "WARNING"}
    env.pop("PATRON_REDIS_URL", None)
    return subprocess.run([sys.executable, "-m", "app.cli", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


def test_generate_run_and_preview(tmp_path):
    history = tmp_path / "h.jsonl"
    r = _patron(tmp_path, "simulate", "generate", "--members", "8", "--days", "90", "--seed", "4",
                "--start", "2024-11-01", "--out", str(history))
    assert r.returncode == 0, r.stderr
    lines = history.read_text(encoding="utf-8").splitlines()
    assert lines and all(json.loads(line)["occurred_at"] for line in lines)
    out = tmp_path / "out"
    r = _patron(tmp_path, "simulate", "--candidate", str(ROOT), "--baseline", str(ROOT), "--events", str(history),
                "--from", "2024-12-01", "--to", "2025-01-15", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "level at end" in r.stdout and "growth earned" in r.stdout
    assert sorted(os.listdir(out)) == ["members.csv", "report.csv", "report.html", "report.json", "report.txt"]
    rep = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert 0 < rep["inputs"]["records"] <= len(lines)
    assert rep["baseline"] == rep["candidate"]
    bad = _patron(tmp_path, "simulate", "--candidate", str(tmp_path / "missing"), "--baseline", str(ROOT),
                  "--events", str(history), "--from", "2024-12-01", "--to", "2025-01-15", "--out", str(out))
    assert bad.returncode == 2 and "not a folder" in bad.stderr
    assert _patron(tmp_path, "db", "upgrade").returncode == 0
    r = _patron(tmp_path, "simulate", "preview", "--at", "2026-01-01T00:00:00+08:00", "--csv")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].startswith("\ufeffmember_id,level,level_after,demoted,")  # BOM: Excel
