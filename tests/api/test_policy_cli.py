"""`patron policy ...` as operators run it (real processes), and activation seen across processes."""
import json
import os
import shutil
import subprocess
import sys
import time

from app import policy
from app.config import ROOT

PATRON = [sys.executable, "-m", "app.cli"]


def run(args, database_url=None, **kw):
    argv = PATRON + (["--database-url", database_url] if database_url else []) + args
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=ROOT, env=env, **kw)


def copy_set(tmp_path, name):
    dest = tmp_path / name
    shutil.copytree(ROOT / "policies", dest / "policies")
    shutil.copytree(ROOT / "rules", dest / "rules")
    return dest


def test_check_ok_and_failing_with_parseable_lines(tmp_path):
    r = run(["policy", "check"])
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout == "" and "OK:" in r.stderr
    bad = copy_set(tmp_path, "bad")
    (bad / "rules" / "demo_risk.yaml").write_text(
        (ROOT / "rules" / "demo_risk.yaml").read_text(encoding="utf-8").replace("priority: 300", "priority: yes")
        .replace("expect: {rule: ok}", "expect: {rule: large_redemption}"), encoding="utf-8")
    r = run(["policy", "check", str(bad)])
    assert r.returncode == 1
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1  # the schema error stops compilation of that ruleset: no example noise
    assert lines[0].startswith("rules/demo_risk.yaml:23:15: $.rules[2].priority: 'yes' is not of type 'integer'")
    (bad / "rules" / "demo_risk.yaml").write_text(
        (ROOT / "rules" / "demo_risk.yaml").read_text(encoding="utf-8")
        .replace("expect: {rule: ok}", "expect: {rule: large_redemption}"), encoding="utf-8")
    r = run(["policy", "check", str(bad)])
    assert r.returncode == 1
    assert "expected rule 'large_redemption', got 'ok' [example]" in r.stdout


def test_diff_is_semantic(tmp_path):
    a, b = copy_set(tmp_path, "a"), copy_set(tmp_path, "b")
    text = (b / "rules" / "demo_risk.yaml").read_text(encoding="utf-8")
    text = text.replace("priority: 300", "priority: 350").replace("  - name: ok\n", "  - name: fine\n")
    (b / "rules" / "demo_risk.yaml").write_text(text, encoding="utf-8")
    r = run(["policy", "diff", str(a), str(b)])
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    assert "ruleset demo_risk: changed $.rules[large_redemption].priority: 300 -> 350" in out
    assert any(line.startswith("ruleset demo_risk: removed $.rules[ok]") for line in out)
    assert any(line.startswith("ruleset demo_risk: added $.rules[fine]") for line in out)
    r = run(["policy", "diff", str(a), str(a)])
    assert r.stdout == ""


def test_explain_names_rule_leaves_and_version(tmp_path):
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"points": 120000, "member": {"level": "钻石"}}), encoding="utf-8")
    r = run(["policy", "explain", "demo_risk", str(event)])
    assert r.returncode == 0, r.stderr
    version = policy.PolicySet(policy.read_root(ROOT)).version
    assert f"policy version {version}" in r.stdout
    assert "decision: large_redemption" in r.stdout
    assert "✓ points gte 100000  <- 120000" in r.stdout
    assert "✗ member.level eq \"钻石\"  <- \"钻石\"" not in r.stdout
    assert "engines agree: True" in r.stdout
    r = run(["policy", "explain", "nope", str(event)])
    assert r.returncode == 1


def test_apply_in_another_process_is_seen_here_within_a_second(app, database_url, tmp_path):
    from app.db import db
    original = policy.read_dirs(app.config["POLICY_DIR"], app.config["RULES_DIR"])
    other = copy_set(tmp_path, "other")
    (other / "rules" / "t_cross_process.yaml").write_text(
        "kind: ruleset\nversion: 1\nname: t_cross_process\nrules:\n"
        "  - {name: always, when: {always: true}, then: [{action: allow}]}\n", encoding="utf-8")
    expected = policy.PolicySet(policy.read_root(other)).version
    try:
        with app.app_context():
            assert policy.active().version != expected
        r = run(["policy", "apply", str(other), "--note", "cross-process"], database_url)
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"activated {expected}" in r.stdout
        deadline = time.monotonic() + 1.5
        seen = None
        with app.app_context():
            while time.monotonic() < deadline:
                seen = policy.active().version
                if seen == expected:
                    break
                time.sleep(0.05)
        assert seen == expected
        from app import engine
        with app.app_context():
            assert engine.evaluate("t_cross_process", {}).rule == "always"
        r = run(["policy", "history"], database_url)
        assert r.returncode == 0 and expected in r.stdout.splitlines()[0] and "cross-process" in r.stdout
        # a broken set applied from the CLI is refused and changes nothing
        (other / "rules" / "t_cross_process.yaml").write_text("kind: ruleset\nversion: 1\nname: 7\n",
                                                               encoding="utf-8")
        r = run(["policy", "apply", str(other)], database_url)
        assert r.returncode == 1 and "REFUSED" in r.stderr
        with app.app_context(), db.connection_context():
            from app.policy import store
            assert store.current()[0] == expected
    finally:
        with app.app_context(), db.connection_context():
            policy.apply(original, "tests")
    assert policy.active_version() == policy.PolicySet(original).version
