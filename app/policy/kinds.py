"""Policy kinds: a kind exists iff schemas/policies/<kind>.json does; contexts register cross-file checks."""
import logging

from app.policy.errors import PolicyError  # noqa: F401  (re-exported: contexts build errors with it)
from app.schemas import SCHEMA_DIR

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
    return sorted(p.stem for p in (SCHEMA_DIR / "policies").glob("*.json"))


_required_kinds = set()
_required_rulesets = set()


def require(*kinds, rulesets=()):
    """Declare kinds (and rulesets by name) the running product needs: a set lacking one cannot be applied."""
    _required_kinds.update(kinds)
    _required_rulesets.update(rulesets)


def completeness_errors(ps):
    """Errors for every required kind or ruleset missing from a policy set (a partial set must not go live)."""
    out = []
    present = set(ps.kinds())
    names = {d.get("name") for d in ps.get("ruleset")}
    for kind in sorted(_required_kinds - present):
        out.append(PolicyError("-", "$", f"the set has no policy of kind {kind!r}, which the product needs "
                                         f"(a partial set cannot be applied)", "required-kind"))
    for name in sorted(_required_rulesets - names):
        out.append(PolicyError("-", "$", f"the set has no ruleset named {name!r}, which the product needs",
                               "required-ruleset"))
    return out
