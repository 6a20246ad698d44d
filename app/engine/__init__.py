"""Rules engine: evaluate a ruleset of a policy set over facts (reference evaluator, or durable_rules).

A leaf: imports no service and not app.policy. With the reference engine selected durable_rules is never
imported (app.engine.durable loads it only when a ruleset is registered with it).
"""
import hashlib
import itertools
import json
import os
import threading
from dataclasses import dataclass

from app.engine import lang
from app.engine.durable import EngineError, adapter  # noqa: F401  (EngineError is public)
from app.errors import Problem

# "durable" (durable_rules through the adapter) or "reference" (pure Python); both give equal answers.
# create_app() sets it from the RULES_ENGINE setting (config file or PATRON_RULES_ENGINE).
DEFAULT_ENGINE = "durable"
ENGINES = ("durable", "reference")

_active_provider = None  # () -> the active PolicySet; installed by policy.startup() (see use_active)
_keep = frozenset()  # ruleset hashes of the set last prepared as active: never evicted

_lock = threading.Lock()
_compiled = {}  # ruleset content hash -> CompiledRuleset
_ids = itertools.count(1)
_PID = [os.getpid()]
os.register_at_fork(after_in_child=lambda: _PID.__setitem__(0, os.getpid()))


@dataclass
class Match:
    rule: str
    priority: int
    actions: list
    description: str = None

    def to_dict(self):
        return {"rule": self.rule, "priority": self.priority, "actions": self.actions}


class Evaluation:
    """The result of one evaluation; ``matches`` in firing order (treat as read-only)."""

    __slots__ = ("ruleset", "version", "mode", "matches", "engine", "_n", "_facts", "_comp", "_inputs")

    def __init__(self, ruleset, version, mode, matches, engine, facts=None, comp=None, inputs=None):
        self.ruleset, self.version, self.mode, self.matches, self.engine = ruleset, version, mode, matches, engine
        self._n = next(_ids)
        self._facts, self._comp, self._inputs = facts, comp, inputs

    @property
    def id(self):
        """``ev-<pid>-<n>``, unique in this process (formatted when read: most evaluations never show it)."""
        return f"ev-{_PID[0]}-{self._n}"

    @property
    def inputs(self):
        """The value of every field the ruleset reads (None when missing), computed on demand."""
        if self._inputs is None:
            self._inputs = self._comp.inputs(self._facts) if self._comp is not None else {}
        return self._inputs

    @property
    def first(self):
        return self.matches[0] if self.matches else None

    @property
    def rule(self):
        return self.matches[0].rule if self.matches else None

    def actions(self):
        """Actions of every match, in firing order."""
        return [a for m in self.matches for a in m.actions]

    def to_dict(self):
        return {"id": self.id, "ruleset": self.ruleset, "version": self.version, "mode": self.mode,
                "engine": self.engine, "rule": self.rule,
                "matches": [m.to_dict() for m in self.matches], "inputs": self.inputs}


def ruleset_hash(doc):
    """8 hex digits of the ruleset's content (its durable_rules name is ``<name>@<hash8>``)."""
    body = {k: v for k, v in doc.items() if k not in ("_file", "examples", "description")}
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:8]


class CompiledRuleset:
    """A ruleset ready to run on both engines; rules in firing order (priority desc, then file order)."""

    def __init__(self, doc):
        self.doc = doc
        self.name = doc["name"]
        self.mode = doc.get("mode", "first")
        self.hash = ruleset_hash(doc)
        self.durable_name = f"{self.name}@{self.hash}"
        self.rules = doc["rules"]
        self.rank = {i: r for r, i in enumerate(sorted(range(len(self.rules)),
                                                       key=lambda i: (-self.rules[i].get("priority", 0), i)))}
        self.order = sorted(range(len(self.rules)), key=self.rank.__getitem__)
        self.reference = lang.ReferenceRuleset(doc)
        self.fields = sorted({f for r in self.rules for f in lang.fields(r["when"])})
        self.matches = [Match(r["name"], r.get("priority", 0), [dict(a) for a in r.get("then", ())],
                              r.get("description")) for r in self.rules]

    def register_durable(self):
        """Compile and register the ruleset with durable_rules (imports it; the durable engine only)."""
        adapter.register(self.durable_name, self.doc)

    def fire(self, facts, engine):
        if engine == "reference":  # candidates in firing order: no sort
            if self.mode == "first":  # short-circuit: stop at the first rule in firing order
                return self.reference.fire(facts, ordered=True, first=True)
            return self.reference.fire(facts, ordered=True)
        if engine == "durable":
            try:
                idx = adapter.fire(self.durable_name, facts)
            except KeyError:  # not registered yet, evicted (see compiled()) or a forked child
                adapter.register(self.durable_name, self.doc)
                idx = adapter.fire(self.durable_name, facts)
        else:
            raise ValueError(f"unknown engine {engine!r}")
        idx = sorted(idx, key=self.rank.__getitem__)
        return idx[:1] if self.mode == "first" else idx

    def match(self, i):
        return self.matches[i]

    def inputs(self, facts):
        out = {}
        for f in self.fields:
            v = lang.lookup(facts, tuple(f.split(".")))
            out[f] = None if v is lang.MISSING else v
        return out


MAX_COMPILED = 512  # validating many candidate sets must not grow the engine without bound


def compiled(doc):
    """The CompiledRuleset of a (valid) ruleset document, compiled once per content hash.

    With the durable engine selected it is registered with durable_rules too, so a ruleset it
    rejects fails here (policy checks report it) rather than at the first evaluation.
    """
    h = ruleset_hash(doc)
    got = _compiled.get(h)
    if got is None or got.name != doc["name"]:
        with _lock:
            got = _compiled.get(h)
            if got is None or got.name != doc["name"]:
                got = CompiledRuleset(doc)
                if DEFAULT_ENGINE == "durable":
                    got.register_durable()
                _compiled[h] = got
                if len(_compiled) > MAX_COMPILED:
                    _evict()
    return got


def _evict():
    """Drop the oldest compiled rulesets that the active set does not use."""
    for h in list(_compiled)[: len(_compiled) - MAX_COMPILED // 2]:
        if h not in _keep:
            adapter.unregister(_compiled.pop(h).durable_name)


def durable_available():
    """Whether durable_rules can be imported here (checked without importing it)."""
    import importlib.util
    try:
        return importlib.util.find_spec("durable_rules_engine") is not None
    except ImportError:
        return False


def configure(name):
    """Choose the engine used when evaluate() is not told (``durable`` or ``reference``).

    Raises:
        ValueError: unknown name, or ``durable`` where durable_rules is not installed.
    """
    global DEFAULT_ENGINE
    if name not in ENGINES:
        raise ValueError(f"RULES_ENGINE must be durable or reference, not {name!r}")
    if name == "durable" and not durable_available():
        raise ValueError("RULES_ENGINE is durable but durable_rules is not installed (it cannot be built on "
                         "Python 3.13 and later): install it, or set RULES_ENGINE to reference")
    DEFAULT_ENGINE = name


def use_active(provider):
    """Install how evaluate() finds the active policy set when it is not given one (policy.startup does)."""
    global _active_provider
    _active_provider = provider


def prepare(policy_set, active=False):
    """Compile (and, for durable_rules, register) every ruleset of a policy set, at start-up in one thread.

    Args:
        policy_set: the set.
        active: it is the set in force; its rulesets are never evicted.
    """
    global _keep
    docs = policy_set.get("ruleset")
    for doc in docs:
        compiled(doc)
    if active:
        _keep = frozenset(ruleset_hash(d) for d in docs)


def _lookup(name, policy_set):
    """(CompiledRuleset, policy set) for a ruleset name; cached on the policy set object."""
    if policy_set is None:
        if _active_provider is None:
            raise RuntimeError("no policy set given and none active (policy.startup() installs the active one)")
        policy_set = _active_provider()
    cache = policy_set.__dict__.get("_engine_compiled")
    if cache is None:
        cache = policy_set.__dict__.setdefault("_engine_compiled", {})
    comp = cache.get(name)
    if comp is None:
        doc = next((d for d in policy_set.get("ruleset") if d.get("name") == name), None)
        if doc is None:
            raise Problem(404, "unknown-ruleset", "Unknown ruleset",
                          f"no ruleset named {name!r} in policy set {policy_set.version}",
                          rulesets=sorted(str(d.get("name")) for d in policy_set.get("ruleset")))
        comp = cache[name] = compiled(doc)
    return comp, policy_set


def evaluate(ruleset_name, facts, policy_set=None, engine=None):
    """Evaluate a ruleset over facts. Pure: no side effects.

    Args:
        ruleset_name: the ruleset's ``name``.
        facts: a JSON-like mapping; dotted rule fields read nested mappings.
        policy_set: the set to use (default: the active one).
        engine: "durable" or "reference" (default DEFAULT_ENGINE); both agree.

    Returns:
        Evaluation: matches in firing order (mode first: at most one), the version, the inputs used.

    Raises:
        Problem: 404 unknown-ruleset; 422 invalid-facts when facts is not a mapping.
    """
    if not isinstance(facts, dict):
        raise Problem(422, "invalid-facts", "Invalid facts", "facts must be a JSON object")
    comp, ps = _lookup(ruleset_name, policy_set)
    engine = engine or DEFAULT_ENGINE
    idx = comp.fire(facts, engine)
    return Evaluation(comp.name, ps.version, comp.mode, [comp.matches[i] for i in idx], engine, facts, comp)


def explain(ruleset_name, facts, policy_set=None):
    """Why a ruleset decides what it does: the evaluation, each rule's condition tree, engines' agreement.

    ``engines_agree`` compares durable_rules with the reference evaluator when durable is the selected
    engine; with the reference engine it is None (durable_rules is not loaded).
    """
    ev = evaluate(ruleset_name, facts, policy_set, engine="reference")
    comp, ps = _lookup(ruleset_name, policy_set)
    doc = comp.doc
    other = comp.fire(facts, "durable") if DEFAULT_ENGINE == "durable" else None
    fired = {m.rule for m in ev.matches}
    rules = []
    for i in comp.order:
        r = comp.rules[i]
        t = lang.trace(r["when"], facts)
        rules.append({"rule": r["name"], "priority": r.get("priority", 0), "matched": t["result"],
                      "fired": r["name"] in fired, "condition": t})
    out = ev.to_dict()
    out.update({"file": doc.get("_file"), "rules": rules,
                "engines_agree": None if other is None else
                [comp.rules[i]["name"] for i in other] == [m.rule for m in ev.matches]})
    return out
