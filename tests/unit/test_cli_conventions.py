"""The ``patron`` command's conventions over every registered command: kinds, --json, one-line errors,
colour only on a terminal, shell completion."""
import json
import os
import pty
import subprocess
import sys

import click

from tests.instance import ROOT

# Arguments a read command needs besides --json (a new read command with required arguments adds a line).
READ_ARGS = {
    "calendar suggest": ["--year", "2026"],
    "ledger balances": ["demo-user"],
    "membership show": ["demo-user"],
    "membership kpis": ["--from", "2026-01", "--to", "2026-02"],
    "policy diff": ["policies/..", "policies/.."],
    "policy explain": ["demo_risk", "EVENT"],
}


def _leaves(cmd, path=()):
    if isinstance(cmd, click.Group):
        if cmd.invoke_without_command:
            yield " ".join(path), cmd
        for name, sub in cmd.commands.items():
            yield from _leaves(sub, path + (name,))
    else:
        yield " ".join(path), cmd


def _commands():
    from app.cli import build_cli
    return dict(_leaves(build_cli()))


def test_every_command_declares_its_kind_and_every_read_command_takes_json():
    commands = _commands()
    assert len(commands) > 25
    for name, cmd in commands.items():
        assert getattr(cmd, "kind", None) in ("read", "write", "tool"), f"patron {name}: declare kind="
        if cmd.kind == "read":
            assert "json" in {p.name for p in cmd.params}, f"patron {name}: a read command takes --json"


def test_every_read_command_prints_json(tmp_path, fresh_database_url):
    """Each read command with --json, against a demo database: stdout parses as JSON."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PATRON_")}
    env["PATRON_DATABASE_URL"] = fresh_database_url
    demo = subprocess.run([sys.executable, "-m", "app.cli", "demo", "--port", "0"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert demo.returncode == 0, demo.stderr[-2000:]
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"amount_fen": 100, "user_id": "u-1"}), encoding="utf-8")
    runs = []
    for name, cmd in sorted(_commands().items()):
        if cmd.kind != "read":
            continue
        required = [p for p in cmd.params if p.required]
        assert not required or name in READ_ARGS, f"patron {name}: add its arguments to READ_ARGS"
        extra = [str(event) if a == "EVENT" else str(ROOT) if a == "policies/.." else a
                 for a in READ_ARGS.get(name, [])]
        runs.append([*name.split(), *extra, "--json"])
    # one interpreter runs them all (each builds its own app, as the command does)
    script = ("import io, json, sys, contextlib\nfrom app.cli import main\nout = []\n"
              "for argv in json.loads(sys.argv[1]):\n"
              "    buf = io.StringIO()\n"
              "    with contextlib.redirect_stdout(buf):\n"
              "        rc = main(argv)\n"
              "    out.append({'argv': argv, 'rc': rc, 'stdout': buf.getvalue()})\n"
              "print(json.dumps(out))\n")
    proc = subprocess.run([sys.executable, "-c", script, json.dumps(runs)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.splitlines()[-1])
    assert len(results) == len(runs) >= 12
    for r in results:
        assert r["rc"] in (0, 1), (r, proc.stderr[-2000:])
        try:
            json.loads(r["stdout"])
        except ValueError:
            raise AssertionError(f"patron {' '.join(r['argv'])}: stdout is not JSON: {r['stdout'][:300]!r}")


def _run(*argv, env=None):
    return subprocess.run([sys.executable, "-m", "app.cli", *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=180, env=env)


def test_usage_errors_are_one_line_with_exit_code_2():
    for argv in (["nope"], ["policy", "check", "/no/such/folder"], ["membership", "show"],
                 ["calendar", "suggest", "--year", "x"], ["simulate"]):
        out = _run(*argv)
        assert out.returncode == 2, (argv, out.stderr)
        assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1, (argv, out.stderr)
        assert out.stderr.startswith("usage error: "), out.stderr


def test_colour_only_on_a_terminal(tmp_path):
    piped = _run("policy", "check")
    assert piped.returncode == 0 and "OK" in piped.stderr and "\x1b[" not in piped.stderr + piped.stdout
    # the same command on a terminal: the status word is coloured
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "policy", "check"], cwd=ROOT, stdin=slave,
                            stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=180)
    os.close(master)
    text = b"".join(chunks).decode("utf-8", "replace")
    assert proc.returncode == 0, text
    assert "\x1b[32mOK\x1b[0m" in text, text[-500:]


def test_shell_completion():
    script = _run("completion", "bash")
    assert script.returncode == 0 and "_PATRON_COMPLETE" in script.stdout
    env = dict(os.environ, _PATRON_COMPLETE="bash_complete", COMP_WORDS="patron pol", COMP_CWORD="1")
    out = subprocess.run([sys.executable, "-c", "import sys; from app.cli import main; sys.exit(main())"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert "policy" in out.stdout, out.stdout + out.stderr
    env["COMP_WORDS"], env["COMP_CWORD"] = "patron policy ch", "2"
    out = subprocess.run([sys.executable, "-c", "import sys; from app.cli import main; sys.exit(main())"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert "check" in out.stdout, out.stdout + out.stderr
