"""Policy sets: the active set of policies/ + rules/ files, its version (content hash), atomic activation.

Public interface (other contexts code against it):
    active() -> PolicySet in force in this process (re-checked against the database at most once a second)
    active_version() -> str | None
    startup(app, apply_from_disk=False)
    check(files) -> (PolicySet, [PolicyError]);  apply(files, actor) -> ApplyResult
    PolicySet.version / get(kind) / one(kind) / ruleset(name)
"""
import logging
import threading
import time
from dataclasses import dataclass

from app import engine
from app.config import ConfigError
from app.db import connection, db
from app.errors import Problem
from app.policy import kinds, store
from app.policy.errors import PolicyError  # noqa: F401
from app.policy.sets import PolicySet, discover, read_dirs, read_root, validate  # noqa: F401

log = logging.getLogger(__name__)

REFRESH_SECONDS = 1.0  # how stale another process's activation may be seen here

_lock = threading.RLock()
_active = None
_checked_at = 0.0


def _file_pointer(name):
    """JSON pointer of a policy file in an apply/validate body: ``/files/policies~1sla.yaml``."""
    return "/files/" + str(name).replace("~", "~0").replace("/", "~1")


class PolicyInvalid(Problem):
    """A policy set with errors; never activated."""

    def __init__(self, errors, version=None):
        super().__init__(422, "policy-invalid", "Policy set invalid",
                         f"{len(errors)} error(s); the active policy set is unchanged",
                         errors=[{**e.to_dict(), "pointer": _file_pointer(e.file)} for e in errors],
                         version=version)
        self.errors = errors


@dataclass
class ApplyResult:
    version: str
    previous: str
    changed: bool


def check(files, complete=True):
    """Parse and fully validate a set of files.

    Args:
        files: {"policies/x.yaml": text, "rules/y.yaml": text}.
        complete: also require every kind/ruleset the product needs (``kinds.require``); False checks
            a fragment (e.g. a sample folder holding one capability's files).

    Returns:
        (PolicySet, list of PolicyError).
    """
    ps = PolicySet(files)
    errors = validate(ps)
    if complete:
        errors = errors + kinds.completeness_errors(ps)
    return ps, errors


def _activate(ps):
    global _active, _checked_at
    engine.prepare(ps, active=True)
    with _lock:
        _active = ps
        _checked_at = time.monotonic()


def _disk_files(app=None):
    if app is None:
        from flask import current_app
        app = current_app
    return read_dirs(app.config["POLICY_DIR"], app.config["RULES_DIR"])


def _refresh():
    """Adopt the database's active version if another process changed it."""
    global _checked_at
    if db.obj is None:
        return
    try:
        with connection():
            version, _ = store.current()
            if version is None or (_active is not None and version == _active.version):
                return
            files = store.files_of(version)
    except Exception:  # noqa: BLE001 - a missing table or a hiccup keeps the current set
        log.debug("policy refresh skipped", exc_info=True)
        return
    finally:
        _checked_at = time.monotonic()
    if files is not None:
        discover()
        _activate(PolicySet(files))
        log.info("policy set %s activated (from the database)", version)


def active():
    """The PolicySet in force in this process (see REFRESH_SECONDS)."""
    if _active is None or time.monotonic() - _checked_at >= REFRESH_SECONDS:
        with _lock:
            if _active is None or time.monotonic() - _checked_at >= REFRESH_SECONDS:
                _refresh()
                if _active is None:
                    # nothing stored yet (no migrations / before the first apply): the configured files
                    _activate(PolicySet(_disk_files()))
    return _active


_derived = {}
_derived_lock = threading.Lock()


def derived(name, build):
    """What a context compiles from the active set (``build(policy_set)``), computed once per version.

    Args:
        name: the context's name for it, e.g. ``"tickets"``.
        build: pure function of the policy set.
    """
    ps = active()
    key = (name, ps.version)
    value = _derived.get(key)
    if value is None:
        value = build(ps)
        with _derived_lock:
            if len(_derived) > 64:  # old versions are dead weight
                _derived.clear()
            _derived[key] = value
    return value


def forget_derived(name=None):
    """Drop compiled values (of one name, or all), e.g. in tests that rebuild the database."""
    with _derived_lock:
        for key in [k for k in _derived if name is None or k[0] == name]:
            del _derived[key]


def active_version():
    """Version of the set in force, or None before any is loaded."""
    return _active.version if _active is not None else None


def apply(files, actor, note=None, if_match=None):
    """Validate, compile, store and activate a policy set atomically; a bad set changes nothing.

    Args:
        files: {"policies/x.yaml": text, ...} (the complete set).
        actor: who applies (e.g. ``api_key:abc``, ``cli:alice``).
        note: optional free text kept in the history.
        if_match: the version the caller expects to be active (412 precondition-failed otherwise).

    Returns:
        ApplyResult(version, previous, changed).

    Raises:
        PolicyInvalid: the set has errors (all of them listed).
    """
    ps, errors = check(files)
    if errors:
        raise PolicyInvalid(errors, ps.version)
    # Storing and adopting under one lock: two concurrent applies in this process adopt in the order they
    # were stored (the last stored wins here too), and a refresh cannot slip an older version in between.
    with _lock:
        previous, changed = store.save_and_activate(ps, actor, note, if_match=if_match)
        _activate(ps)
    if changed:
        log.info("policy set %s activated by %s (was %s)", ps.version, actor, previous)
    return ApplyResult(ps.version, previous, changed)


def startup(app, apply_from_disk=False):
    """Load the active set at process start.

    The set stored in the database wins; when there is none (or ``apply_from_disk`` and the configured
    files differ), the configured files are validated and applied.

    Raises:
        PolicyInvalid: nothing is active yet and the configured files are invalid.
    """
    try:
        engine.configure(app.config.get("RULES_ENGINE") or "durable")
    except ValueError as exc:
        raise ConfigError(f"PATRON_RULES_ENGINE: {exc}") from None
    engine.use_active(active)
    discover()
    with app.app_context(), connection():
        if not store.tables_ready():
            log.warning("policy tables missing (run `patron db upgrade`); using the configured files")
            _activate(PolicySet(_disk_files(app)))
            return
        version, _ = store.current()
        disk = None
        if version is None or apply_from_disk:
            disk = _disk_files(app)
            if version is not None and PolicySet(disk).version == version:
                disk = None
        if disk is not None:
            try:
                apply(disk, "system:startup", note="configured files at start-up")
                return
            except PolicyInvalid as exc:
                if version is None:
                    for err in exc.errors:
                        log.error("%s", err)
                    raise
                log.error("configured policy files are invalid; keeping active set %s:\n%s", version,
                          "\n".join(str(e) for e in exc.errors))
        files = store.files_of(version)
        _activate(PolicySet(files))
