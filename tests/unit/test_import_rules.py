"""What may import what (docs/architecture.md), checked on every module's imports, function-level ones included."""
import ast
import functools
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("app", "jobs")


def module_name(path):
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def modules():
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield module_name(path), path


@functools.lru_cache(maxsize=None)  # every rule reads the same modules: parse each file once per run
def imports(name, path):
    """[(imported module, line, at module level?)] of first-party imports (relative ones resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = set(id(n) for n in tree.body)
    out = []
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join(pkg + ([base] if base else []))
            # "from app import engine" imports the module app.engine
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        for target in targets:
            if target.split(".")[0] in PACKAGES:
                out.append((target, node.lineno, id(node) in top))
    return tuple(out)


def under(module, prefix):
    return module == prefix or module.startswith(prefix + ".")


def violations(rule):
    out = []
    for name, path in modules():
        for target, line, _ in imports(name, path):
            message = rule(name, target)
            if message:
                out.append(f"{path.relative_to(ROOT)}:{line}: {name} imports {target}: {message}")
    return sorted(set(out))


def test_engine_and_policy_import_no_service_and_no_api():
    def rule(name, target):
        if (under(name, "app.engine") or under(name, "app.policy")) and (
                under(target, "app.services") or under(target, "app.api")):
            return "the engine and the policy core are leaves; contexts register into them"
    assert violations(rule) == []


def test_engine_never_imports_policy():
    def rule(name, target):
        if under(name, "app.engine") and under(target, "app.policy"):
            return "policy builds on the engine, never the reverse (the active set comes in via engine.use_active)"
    assert violations(rule) == []


def test_models_import_only_db_models_and_platform():
    allowed = ("app.db", "app.models", "app.platform")

    def rule(name, target):
        if under(name, "app.models") and not any(under(target, a) for a in allowed) and target != "app":
            return "models import only app.db, app.models and app.platform"
    assert violations(rule) == []


def test_migrations_never_import_models():
    def rule(name, target):
        if under(name, "app.migrations") and under(target, "app.models"):
            return "a migration is frozen DDL; the models change, the migration must not"
    assert violations(rule) == []


def test_platform_imports_no_service_and_no_api():
    def rule(name, target):
        if under(name, "app.platform") and (under(target, "app.services") or under(target, "app.api")
                                            or under(target, "jobs")):
            return "platform mechanisms are shared by every context and import none"
    assert violations(rule) == []


def test_no_function_level_import_between_engine_policy_ops_and_jobs():
    """The cycles engine<->policy and app<->api.ops<->jobs.runner are gone, not hidden in functions."""
    out = []
    for name, path in modules():
        if not (under(name, "app.engine") or under(name, "app.policy") or name in ("app.api.ops", "jobs", "jobs.runner")):
            continue
        for target, line, top in imports(name, path):
            if not top and target not in ("app", "jobs"):
                out.append(f"{path.relative_to(ROOT)}:{line}: function-level import of {target}")
    assert out == []


def test_ops_does_not_import_jobs():
    def rule(name, target):
        if name == "app.api.ops" and under(target, "jobs"):
            return "/readyz reads the scheduler's health from app.platform.scheduler; jobs.runner imports the app"
    assert violations(rule) == []


def _context(module):
    """The context package a module belongs to (``app.services.<ctx>``), or None."""
    parts = module.split(".")
    return ".".join(parts[:3]) if len(parts) >= 3 and parts[:2] == ["app", "services"] else None


# Calls into another context that do not go through a port module, as the code stands (docs/architecture.md).
# Simulation replays membership and tickets in-process (it is a driver of those contexts, not a peer);
# identity reads the ticket staff directory; the service desk and its bot search the knowledge base.
CROSS_CONTEXT_EXCEPTIONS = {
    "app.services.simulation": {"app.services.membership", "app.services.tickets"},
    "app.services.identity": {"app.services.tickets"},
    "app.services.service": {"app.services.knowledge"},
}


def test_a_context_calls_another_only_through_a_port_module():
    def rule(name, target):
        mine, theirs = _context(name), _context(target)
        if not mine or not theirs or mine == theirs:
            return None
        if name.rsplit(".", 1)[-1] == f"{theirs.rsplit('.', 1)[-1]}_port":
            return None  # services/<ctx>/<other>_port.py is where a context calls another
        if theirs in CROSS_CONTEXT_EXCEPTIONS.get(mine, ()):
            return None
        return f"call {theirs} through {mine}/{theirs.rsplit('.', 1)[-1]}_port.py"
    assert violations(rule) == []


def test_services_and_jobs_never_import_the_http_layer():
    def rule(name, target):
        if (under(name, "app.services") or under(name, "jobs") or under(name, "app.platform")
                or under(name, "app.models")) and under(target, "app.api"):
            return "the API is the outermost layer: it calls services, never the reverse"
    assert violations(rule) == []


def test_platform_reads_the_policy_core_only_for_the_active_version_and_the_access_view():
    """app.platform sits below app.policy; two mechanisms read the active set (audit: the version in force,
    auth: the access view), through function-level imports. No other platform module may."""
    def rule(name, target):
        if under(name, "app.platform") and under(target, "app.policy") \
                and name not in ("app.platform.audit", "app.platform.auth"):
            return "platform mechanisms do not depend on the policy core"
    assert violations(rule) == []


def test_engine_imports_only_errors():
    def rule(name, target):
        if under(name, "app.engine") and not (under(target, "app.engine") or under(target, "app.errors") or target == "app"):
            return "the engine is a leaf: only app.errors"
    assert violations(rule) == []
