"""Run with durable_rules unimportable (as on Python 3.13): a pytest plugin (``-p tests.no_durable``) and ``install()``.

Any attempt to import ``durable`` or ``durable_rules_engine`` raises ModuleNotFoundError and is recorded;
the plugin fails the session if one was attempted, even when the code under test swallowed the error.
"""
import importlib.abc
import os
import sys

BLOCKED = ("durable", "durable_rules_engine")
ATTEMPTS = []


class _Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            ATTEMPTS.append(name)
            raise ModuleNotFoundError(f"No module named {name!r} (blocked: durable_rules is not installed here)",
                                      name=name)
        return None


def install(select_reference=True):
    """Block durable_rules in this process (and select the reference engine); returns the attempts list."""
    for name in [n for n in sys.modules if n.split(".")[0] in BLOCKED]:
        raise RuntimeError(f"{name} was imported before the blocker was installed")
    if not any(isinstance(f, _Blocker) for f in sys.meta_path):
        sys.meta_path.insert(0, _Blocker())
    if select_reference:
        os.environ["PATRON_RULES_ENGINE"] = "reference"  # for apps built from the environment
        os.environ["PATRON_TEST_RULES_ENGINE"] = "reference"  # for the suite's test app (tests/conftest.py)
    return ATTEMPTS


if __name__ != "__main__":  # loaded as a pytest plugin (-p): before tests/conftest.py reads the environment
    install()


def main(argv):
    """``python -m tests.no_durable [--keep-engine] <patron args>``: the patron CLI without durable_rules.

    Exit status 3 when the command succeeded although durable_rules was imported (or tried), else the CLI's.
    """
    keep = argv[:1] == ["--keep-engine"]
    install(select_reference=not keep)
    from app.cli import main as patron
    rc = patron(argv[1:] if keep else argv)
    if ATTEMPTS:
        print(f"durable_rules import attempted: {sorted(set(ATTEMPTS))}", file=sys.stderr)
        return rc or 3
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


def pytest_sessionfinish(session, exitstatus):
    if ATTEMPTS:
        print(f"\ndurable_rules import attempted with the reference engine selected: {sorted(set(ATTEMPTS))}",
              file=sys.stderr)
        session.exitstatus = 1
