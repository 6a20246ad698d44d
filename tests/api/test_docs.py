"""Every shell example in README.md and docs/*.md runs, in order, against a fresh demo instance.

Rules of the harness (README "Docs that run"):
- Each file's fenced ```bash and ```sh blocks run in order in one bash script (`set -euo pipefail`), so a
  later block uses the shell variables an earlier one set (ids taken from earlier output).
- The instance is a fresh `patron demo` + `patron serve` on an ephemeral port: `$PATRON_KEY` holds the
  printed key and every `http://127.0.0.1:8000` in a block is that server's address.
- `curl` fails the block on any HTTP status >= 400 (curl --fail-with-body).
- A block that cannot run here is skipped with a reason, on the line just above its fence:
  `<!-- doc-test: skip (reason) -->`; one whose commands must fail (an error example) is marked
  `<!-- doc-test: expect-failure -->`.
- The working directory is a scratch folder that mirrors the repository (files a block writes land
  there; policies/, rules/, docs/ and schemas/ are copies, the rest symlinks), with `.venv/bin/patron`
  reaching the same database as the server. The test also checks the repository is unchanged after.
"""
import re
import shutil
import subprocess

import pytest

from tests.instance import BIN, ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(bash|sh)\s*$")
MARKER = re.compile(r"<!--\s*doc-test:\s*(skip|expect-failure)\b\s*(.*?)\s*-->")
ORIGIN = "http://127.0.0.1:8000"
COPIED = ("policies", "rules", "docs", "schemas")

PRELUDE = r"""
set -euo pipefail
curl() { command curl -sS --fail-with-body --max-time 60 "$@"; }
export -f curl
"""


def blocks(path):
    """[(line, mode, text)] of the shell blocks of a Markdown file; mode is run, skip or expect-failure."""
    out, lines, i = [], path.read_text(encoding="utf-8").splitlines(), 0
    while i < len(lines):
        if FENCE.match(lines[i]):
            start, mode, reason = i + 1, "run", ""
            for back in range(i - 1, max(i - 3, -1), -1):  # the marker sits just above the fence
                found = MARKER.search(lines[back])
                if found:
                    mode, reason = found.group(1), found.group(2)
                    break
                if lines[back].strip():
                    break
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            if mode == "skip":
                assert reason.strip("() "), f"{path.name}:{start}: a skipped block must say why"
            out.append((start, mode, "\n".join(lines[i + 1:j])))
            i = j
        i += 1
    return out


def script_of(path):
    parts = [PRELUDE]
    for line, mode, text in blocks(path):
        if mode == "skip":
            continue
        text = text.replace(ORIGIN, "$PATRON_TEST_URL")
        parts.append(f'echo "=== {path.name}:{line}" >&2')
        if mode == "expect-failure":
            # the commands of an error example must fail (curl: HTTP >= 400), and the script goes on
            parts.append("if ( set -e\n" + text + "\n) >&2; then echo 'expected a failure' >&2; exit 1; fi")
        else:
            parts.append(text)
    return "\n".join(parts) + "\n"


def test_harness_reads_blocks_and_markers(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text("a\n```bash\necho 1\n```\n<!-- doc-test: skip (needs a container runtime) -->\n"
                   "```sh\nexit 1\n```\n```python\nraise\n```\n<!-- doc-test: expect-failure -->\n"
                   "```bash\nfalse\n```\n", encoding="utf-8")
    assert [(m, t) for _, m, t in blocks(doc)] == [("run", "echo 1"), ("skip", "exit 1"),
                                                   ("expect-failure", "false")]
    script = script_of(doc)
    assert "echo 1" in script and "\nexit 1\n" not in script and "raise" not in script


def _tracked_state():
    return subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                          capture_output=True, text=True).stdout


def _workdir(tmp_path):
    """A scratch folder mirroring the repository's top level (symlinks), so blocks may write files."""
    work = tmp_path / "work"
    work.mkdir()
    for entry in ROOT.iterdir():
        if entry.name in ("instance", ".git"):
            continue
        if entry.name in COPIED:  # blocks may edit copies of these (cp -r policies ...): never the repo's
            shutil.copytree(entry, work / entry.name)
        else:
            (work / entry.name).symlink_to(entry)
    if not (work / ".venv").exists():  # CI's venv may live elsewhere: the one running the tests
        (work / ".venv").symlink_to(BIN.parent)
    return work


@pytest.mark.parametrize("doc", DOCS, ids=[p.relative_to(ROOT).as_posix() for p in DOCS])
def test_doc_examples_run_against_a_fresh_demo(doc, request, tmp_path):
    if not any(mode != "skip" for _, mode, _ in blocks(doc)):
        return  # prose only; listed anyway, so a block added later runs without touching this test
    demo_instance = request.getfixturevalue("demo_instance")  # started only for a file with blocks to run
    env = {**demo_instance.env, "PATRON_KEY": demo_instance.key, "PATRON_TEST_URL": demo_instance.base}
    script = tmp_path / "doc.sh"
    script.write_text(script_of(doc), encoding="utf-8")
    before = _tracked_state()
    run = subprocess.run(["bash", str(script)], cwd=_workdir(tmp_path), env=env, capture_output=True,
                         text=True, timeout=1200)  # a loaded CI machine took over 600 s for README.md
    assert _tracked_state() == before, "a doc block changed files of the repository itself"
    assert run.returncode == 0, (f"{doc.name}: a shell example failed (exit {run.returncode}); the last "
                                 f"'=== file:line' names its block\n--- stderr ---\n{run.stderr[-6000:]}\n"
                                 f"--- stdout ---\n{run.stdout[-3000:]}\n--- server ---\n"
                                 f"{demo_instance.server_log()[-2000:]}")
