"""Containerfile and compose.yaml match the README's production section and the settings table.

No container runtime exists on the build machines, so the files are parsed and checked instead.
"""
import re
import shlex

import yaml

from app.config import DEFAULTS, load_config
from tests.instance import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")


def containerfile():
    """[(instruction, argument)] with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Containerfile").read_text(encoding="utf-8"))
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def compose():
    return yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))


def production_block():
    start = README.index("## Operations / production")
    block = README[README.index("```bash", start) + 7:]
    return block[:block.index("```")]


def _argv(command):
    return command if isinstance(command, list) else shlex.split(command)


def test_containerfile_installs_the_lock_and_serves_like_the_readme():
    steps = containerfile()
    assert steps[0][0] == "FROM" and steps[0][1].startswith("python:3.11")
    runs = " ".join(arg for word, arg in steps if word == "RUN")
    copies = [arg.split()[0] for word, arg in steps if word == "COPY"]
    assert "requirements.lock" in copies and "pip install -r requirements.lock" in runs
    # dependencies come only from the lock: the app itself is installed without resolving any
    assert "--no-deps" in runs
    for folder in ("app", "jobs", "policies", "rules", "schemas"):
        assert folder in copies, folder
    assert ("EXPOSE", "8000") in steps
    assert ("USER", "patron") in steps
    cmd = next(arg for word, arg in steps if word == "CMD")
    serve = next(line for line in production_block().splitlines() if line.startswith("patron serve"))
    assert __import__("json").loads(cmd) == shlex.split(serve.split("#")[0])


def test_lock_pins_every_runtime_dependency():
    lock = (ROOT / "requirements.lock").read_text(encoding="utf-8")
    pinned = {m.group(1).lower().replace("_", "-") for m in re.finditer(r"^([A-Za-z0-9_.-]+)==", lock, re.M)}
    setup = (ROOT / "setup.cfg").read_text(encoding="utf-8")
    requires = setup[setup.index("install_requires ="):setup.index("[options.packages.find]")]
    names = {re.match(r"\s*([A-Za-z0-9_.-]+)", line).group(1).lower().replace("_", "-")
             for line in requires.splitlines()[1:] if line.strip() and not line.strip().startswith("#")}
    assert names and names <= pinned, names - pinned
    assert "psycopg2-binary" in pinned


def test_compose_has_the_services_commands_and_health_checks():
    doc = compose()
    services = doc["services"]
    assert set(services) == {"postgres", "redis", "migrate", "web", "worker"}
    for name in ("postgres", "redis", "web", "worker"):
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no health check"
    block = production_block()
    # migrate runs what the README runs once per deploy, in the same order
    migrate = " ".join(_argv(services["migrate"]["command"]))
    assert migrate.index("patron db upgrade") < migrate.index("patron policy apply")
    assert "patron db upgrade" in block and "patron policy apply" in block
    assert services["migrate"]["restart"] == "no"
    assert services["migrate"]["build"]["dockerfile"] == "Containerfile"
    for name in ("web", "worker"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    serve = next(line for line in block.splitlines() if line.startswith("patron serve"))
    assert _argv(services["web"]["command"]) == shlex.split(serve.split("#")[0])
    assert services["web"]["ports"] == ["8000:8000"]
    assert "/readyz" in " ".join(services["web"]["healthcheck"]["test"])
    assert _argv(services["worker"]["command"])[:2] == ["patron", "worker"]
    assert "--metrics-port" in services["worker"]["command"]  # job metrics reach Prometheus (README)
    assert "--metrics-port" in README


def test_compose_settings_are_documented_known_and_valid(tmp_path):
    services = compose()["services"]
    for name in ("migrate", "web", "worker"):
        env = services[name]["environment"]
        for key in env:
            assert key.startswith("PATRON_"), key
            assert key[len("PATRON_"):] in DEFAULTS, f"{key} is not a setting"
            assert f"`{key}`" in README, f"{key} is not in the README's configuration table"
        assert env["PATRON_DATABASE_URL"].startswith("postgresql://") and "@postgres:5432/" in env["PATRON_DATABASE_URL"]
        assert env["PATRON_REDIS_URL"] == "redis://redis:6379/0"
        resolved = {k: re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(v)) for k, v in env.items()}
        cfg = load_config(str(tmp_path), environ=resolved)  # raises ConfigError on a bad value
        assert cfg["REDIS_URL"] == "redis://redis:6379/0"
    # the README's production settings are the compose ones (same variables)
    for key in re.findall(r"export (PATRON_[A-Z_]+)=", production_block()):
        assert key in services["web"]["environment"], key
