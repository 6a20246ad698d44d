"""Policy kinds: a kind exists iff schemas/policies/<kind>.json does; contexts register cross-file checks."""
import logging

from app.policy.errors import PolicyError  # noqa: F401  (re-exported: contexts build errors with it)

log = logging.getLogger(__name__)

_checks = {}  # kind -> [callable(policy_set) -> list]


def register(kind, cross_check=None):
    """Register a kind's cross-file check (idempotent; several checks per kind are allowed).

    Args:
        kind: the policy kind (``schemas/policies/<kind>.json`` must exist for files of it to be valid).
        cross_check: ``fn(policy_set) -> list`` of PolicyError (strings ``"file: $.path: message"`` and
            ``(file, path, message)`` tuples are accepted too). None just declares the kind.
    """
    fns = _checks.setdefault(kind, [])
    if cross_check is not None and cross_check not in fns:
        fns.append(cross_check)


def registered():
    """kind -> list of cross-check callables."""
    return {k: list(v) for k, v in _checks.items()}


def known_kinds():
    """Kinds that have a schema under schemas/policies/."""
    from app.schemas import SCHEMA_DIR
    return sorted(p.stem for p in (SCHEMA_DIR / "policies").glob("*.json"))
