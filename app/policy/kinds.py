"""Policy kinds: a kind exists iff schemas/policies/<kind>.json does; contexts register cross-file checks."""
import logging

from app.policy.errors import PolicyError  # noqa: F401  (re-exported: contexts build errors with it)
from app.schemas import SCHEMA_DIR

log = logging.getLogger(__name__)

_checks = {}  # kind -> [callable(policy_set) -> list]


_former = {}  # an earlier name of a kind -> its name now


def register(kind, cross_check=None, formerly=()):
    """Register a kind's cross-file check (idempotent; several checks per kind are allowed).

    Args:
        kind: the policy kind (``schemas/policies/<kind>.json`` must exist for files of it to be valid).
        cross_check: ``fn(policy_set) -> list`` of PolicyError (strings ``"file: $.path: message"`` and
            ``(file, path, message)`` tuples are accepted too). None just declares the kind.
        formerly: earlier names of the kind. A file declaring one (a policy version stored before the
            rename) is read as this kind; its text, and so its version (the content hash), is unchanged.
    """
    for old in formerly:
        _former[old] = kind
    fns = _checks.setdefault(kind, [])
    if cross_check is not None and cross_check not in fns:
        fns.append(cross_check)


def current_name(kind):
    """The kind's name now (``kind`` itself unless it was renamed, see ``register(formerly=...)``)."""
    return _former.get(kind, kind)


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
