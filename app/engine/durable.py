"""durable_rules adapter: rulesets compiled to durable_rules JSON, one engine per process, serialised access.

How the rule language maps onto durable_rules (whose own comparisons coerce "5" == 5, whose ``$nex``
loops forever, and which has no ``$not``):

* each fact is *projected* before it is asserted: for the i-th field a ruleset uses, ``f<i>t`` holds
  its type tag (``n``/``s``/``b``/``l``/``o``, ``-`` when missing), ``f<i>e`` a type-tagged text for
  equality (``n:5``, ``s:5``, ``b:1``), ``f<i>n``/``f<i>s`` the value only when it is a number/string,
  so comparisons are type-strict as in the reference evaluator; numbers are clamped to +-1e18
  (durable_rules rejects larger ones; rule values are limited to +-1e15 by the schema, so no
  comparison changes); list items go to ``f<i>ln/ls/lb`` (for ``contains`` via ``$iany``);
* ``eq/ne/in/not_in`` compare ``f<i>e`` so no leaf expands into overlapping ``$or`` branches
  (durable_rules turns ``$and`` of ``$or`` into all combinations and rejects very large ones);
* ``not`` is pushed down to the leaves (De Morgan) using each leaf's exact complement;
* ``contains``/``starts_with`` on strings compile to ``$mt`` (durable's regex, full match) with
  regex characters escaped as ``[c]``; when the text holds characters that cannot be escaped that
  way (``[ ] \\ ^ $``), or the leaf sits under a ``not``, the leaf becomes a *derived fact*
  ``d<j>`` computed by the reference leaf predicate before the assert; so do ``in``/``not_in``
  with more than MAX_IN values, and a whole rule condition that would expand into more than
  MAX_ALTERNATIVES alternatives;
* mode ``all``: a fact is asserted (it fires every matching rule), its actions drained, then it is
  retracted; mode ``first``: an event is asserted and consumed by the single matching rule of lowest
  ``pri`` (= rank in firing order), so nothing needs retracting. Either way the engine keeps no
  state between evaluations.
"""
import itertools
import json
import math
import os
import threading

from app.engine import lang
from app.errors import Problem

CLAMP = 10 ** 18
MAX_IN = 64  # longer in/not_in lists are derived facts (durable_rules stalls on ~700-branch $or)
MAX_ALTERNATIVES = 256  # per rule, see _Compiler.rule
_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_PID = [os.getpid()]  # os.getpid() is a system call; keep it, refreshed in forked children
os.register_at_fork(after_in_child=lambda: _PID.__setitem__(0, os.getpid()))
_REGEX_META = set(".*+?|(){}")
_UNESCAPABLE = set("[]\\^$")


class EngineError(Problem):
    """durable_rules failed (not a 'no match', which is an empty result): a clear 500 problem."""

    def __init__(self, detail):
        super().__init__(500, "rules-engine-error", "Rules engine error", detail)


def _dre():
    """durable_rules' C engine module, imported on first use only: the reference engine never loads it."""
    try:
        import durable_rules_engine
    except ImportError as exc:
        raise EngineError("durable_rules is not installed (it cannot be built on Python 3.13 and later); "
                          "set RULES_ENGINE to reference") from exc
    return durable_rules_engine


def _escape(text):
    return "".join(f"[{ch}]" if ch in _REGEX_META else ch for ch in text)


class _Compiler:
    def __init__(self, doc):
        self.fields = []  # dotted names; index = i in f<i>*
        self.derived = []  # functions facts -> bool, asserted as d<j>
        self.lists = set()  # field indexes whose list items must be projected

    def field(self, name):
        if name not in self.fields:
            self.fields.append(name)
        return self.fields.index(name)

    def derive(self, cond):
        """A derived fact: the reference predicate of ``cond`` (a leaf or a whole condition)."""
        if "field" in cond:
            path, pred = tuple(cond["field"].split(".")), lang.leaf_fn(cond["op"], cond.get("value"))
            self.derived.append(lambda facts: pred(lang.lookup(facts, path)))
        else:
            self.derived.append(lang.compile_condition(cond))
        return f"d{len(self.derived) - 1}"

    def rule(self, when):
        """The durable condition of one rule; a condition durable_rules would expand into too many
        alternatives (it turns $and of $or into every combination) is one derived fact instead."""
        expr = self.cond(when)
        return expr if alternatives(expr) <= MAX_ALTERNATIVES else {self.derive(when): True}

    TRUE = {"k": 1}
    FALSE = {"k": 2}

    def cond(self, c, neg=False):
        if "all" in c or "any" in c:
            key = "all" if "all" in c else "any"
            parts = [self.cond(x, neg) for x in c[key]]
            conj = (key == "all") != neg
            if not parts:
                return self.TRUE if conj else self.FALSE
            return parts[0] if len(parts) == 1 else {"$and" if conj else "$or": parts}
        if "not" in c:
            return self.cond(c["not"], not neg)
        if "always" in c:
            return self.TRUE if bool(c["always"]) != neg else self.FALSE
        return self.leaf(c, neg)

    def leaf(self, c, neg):
        op, v = c["op"], c.get("value")
        i = self.field(c["field"])
        t, e, n = f"f{i}t", f"f{i}e", f"f{i}n"
        present = {"$neq": {t: "-"}}
        missing = {t: "-"}

        if op in ("in", "not_in") and len(v) > MAX_IN:
            return {self.derive(c): not neg}
        if op in ("eq", "in"):  # f<i>e holds one value, so the $or branches never overlap
            encs = list(dict.fromkeys(encode(x) for x in ([v] if op == "eq" else v)))
            if not neg:
                return {e: encs[0]} if len(encs) == 1 else {"$or": [{e: x} for x in encs]}
            parts = [{"$neq": {e: x}} for x in encs]
            return parts[0] if len(parts) == 1 else {"$and": parts}
        if op in ("ne", "not_in"):
            encs = list(dict.fromkeys(encode(x) for x in ([v] if op == "ne" else v)))
            if not neg:
                return {"$and": [present] + [{"$neq": {e: x}} for x in encs]}
            return {"$or": [missing] + [{e: x} for x in encs]}
        if op in ("gt", "gte", "lt", "lte"):
            if not neg:
                return {f"${op}": {n: v}}
            flip = {"gt": "lte", "gte": "lt", "lt": "gte", "lte": "gt"}[op]
            return {"$or": [{"$neq": {t: "n"}}, {f"${flip}": {n: v}}]}
        if op == "between":
            lo, hi = v
            if not neg:
                return {"$and": [{"$gte": {n: lo}}, {"$lte": {n: hi}}]}
            return {"$or": [{"$neq": {t: "n"}}, {"$lt": {n: lo}}, {"$gt": {n: hi}}]}
        if op == "exists":
            return present if bool(v) != neg else missing
        if op in ("contains", "starts_with"):
            if neg or (isinstance(v, str) and set(v) & _UNESCAPABLE):
                return {self.derive(c): not neg}
            if op == "starts_with":
                return {"$mt": {f"f{i}s": _escape(v) + ".*"}}
            self.lists.add(i)
            member = {"$iany": {f"f{i}l{lang.tclass(v)}": {"$i": v}}}
            if isinstance(v, str):  # a string field or a list field: the branches never overlap
                return {"$or": [{"$mt": {f"f{i}s": ".*" + _escape(v) + ".*"}}, member]}
            return member
        raise ValueError(f"unknown op {op!r}")


def alternatives(expr):
    """How many alternatives durable_rules expands a condition into ($or adds, $and multiplies)."""
    if "$or" in expr:
        return sum(alternatives(e) for e in expr["$or"])
    if "$and" in expr:
        n = 1
        for e in expr["$and"]:
            n *= alternatives(e)
        return n
    return 1


def encode(x):
    """Type-tagged text of a value for equality: 5 and 5.0 are ``n:5``, "5" is ``s:5``, True is ``b:1``."""
    tag = lang.tclass(x)
    if tag == "n":
        if math.isinf(x):
            return "n:inf" if x > 0 else "n:-inf"
        return f"n:{int(x)}" if float(x).is_integer() else f"n:{float(x)!r}"
    if tag == "s":
        return "s:" + x
    if tag == "b":
        return "b:1" if x else "b:0"
    return tag + ":"


def _num(x):
    return CLAMP if x > CLAMP else -CLAMP if x < -CLAMP else x


class Compiled:
    """One ruleset compiled for durable_rules: its JSON definition and the fact projection."""

    def __init__(self, doc, name):
        self.name = name
        self.first = doc.get("mode", "first") == "first"
        comp = _Compiler(doc)
        self.rules = {}
        # firing order: priority descending, ties in file order; durable's "pri" runs lowest first
        order = sorted(range(len(doc["rules"])), key=lambda i: (-doc["rules"][i].get("priority", 0), i))
        rank = {i: r for r, i in enumerate(order)}
        for idx, rule in enumerate(doc["rules"]):
            self.rules[f"r{idx}"] = {"all": [{"m": comp.rule(rule["when"])}]}
            if self.first:
                self.rules[f"r{idx}"]["pri"] = rank[idx]
        self.fields = [(i, tuple(f.split("."))) for i, f in enumerate(comp.fields)]
        self.derived = list(enumerate(comp.derived))
        self.lists = comp.lists
        self._plan = [(i, path, path[0] if len(path) == 1 else None, f"f{i}t", f"f{i}e", f"f{i}n", f"f{i}s")
                      for i, path in self.fields]

    def definition(self):
        return json.loads(json.dumps(self.rules))

    def project(self, facts, fact_id):
        """The fact asserted for ``facts``: typed projections of every field the ruleset reads."""
        out = {"id": fact_id, "k": 1}
        for i, path, key, kt, ke, kn, ks in self._plan:
            if key is not None:
                x = facts.get(key) if type(facts) is dict else None
            else:
                x = lang.lookup(facts, path)
                if x is lang.MISSING:
                    x = None
            tp = type(x)
            if tp is str:
                out[kt] = "s"
                out[ke] = "s:" + x
                out[ks] = x
            elif tp is int:
                out[kt] = "n"
                out[ke] = f"n:{x}"
                out[kn] = _num(x)
            elif x is None:
                out[kt] = "-"
                out[ke] = "-:"
            else:
                tag = lang.tclass(x)
                out[kt] = tag
                out[ke] = encode(x)
                if tag == "n":
                    out[kn] = _num(x)
                elif tag == "l" and i in self.lists:
                    for sub in ("n", "s", "b"):
                        items = [(_num(y) if sub == "n" else y) for y in x if lang.tclass(y) == sub]
                        if items:
                            out[f"f{i}l{sub}"] = items
        for j, pred in self.derived:
            out[f"d{j}"] = bool(pred(facts))
        return out


class Adapter:
    """The process's durable_rules engine: rulesets registered once by versioned name, access serialised.

    It drives durable_rules' engine module (``durable_rules_engine``, the C rete network that
    ``durable.engine.Host`` wraps) directly: our actions only note which rule fired, so the Host's
    per-action closures, state updates and timer threads would be pure overhead.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._pid = None
        self._handles = {}  # durable name -> (handle, Compiled)
        self._ids = itertools.count(1)

    def _check_pid(self):
        # engine state is per process: after a fork the child registers its own copies.
        if self._pid != _PID[0]:
            self._pid = _PID[0]
            self._handles = {}

    def registered(self, name):
        with self._lock:
            self._check_pid()
            return name in self._handles

    def register(self, name, doc):
        """Register the ruleset ``doc`` under ``name`` (``ruleset@hash8``) unless it already is."""
        dre = _dre()
        with self._lock:
            self._check_pid()
            if name in self._handles:
                return self._handles[name][1]
            compiled = Compiled(doc, name)
            try:
                handle = dre.create_ruleset(name, json.dumps(compiled.rules, ensure_ascii=False))
            except Exception as exc:  # noqa: BLE001 - the engine's own errors become EngineError
                raise EngineError(f"durable_rules rejected ruleset {name}: {exc}") from exc
            self._handles[name] = (handle, compiled)
            return compiled

    def unregister(self, name):
        with self._lock:
            entry = self._handles.pop(name, None)
            if entry is not None:  # registered, so durable_rules is loaded already
                _dre().delete_ruleset(entry[0])

    def fire(self, name, facts):
        """Indexes of the rules of ruleset ``name`` whose condition holds for ``facts`` (unordered)."""
        dre = _dre()
        with self._lock:
            self._check_pid()
            handle, compiled = self._handles[name]
            # a unique id per evaluation: identical concurrent payloads would otherwise collide
            payload = _encoder.encode(compiled.project(facts, f"{self._pid}-{next(self._ids)}"))
            fired = []
            try:
                if compiled.first:
                    # mode first: an event is consumed by the one matching rule of lowest "pri"
                    result = dre.assert_event(handle, payload)
                    if result[0] == 0:
                        started = dre.start_action_for_state(handle, result[1])
                        message = started[1] if started else None
                        while message:
                            fired.append(int(message[3:message.index('"', 2)]))
                            message = dre.complete_and_start_action(handle, result[1])
                    elif result[0] != 1:
                        raise EngineError(f"durable_rules returned {result[0]} on {name}")
                    return fired
                result = dre.assert_fact(handle, payload)
                if result[0] == 0:
                    state = result[1]
                    started = dre.start_action_for_state(handle, state)
                    message = started[1] if started else None
                    while message:  # '{"r<index>":{...}}', one per matching rule
                        fired.append(int(message[3:message.index('"', 2)]))
                        message = dre.complete_and_start_action(handle, state)
                elif result[0] != 1:  # 1 = no rule matched, an empty result
                    raise EngineError(f"durable_rules returned {result[0]} on {name}")
                dre.retract_fact(handle, payload)
            except dre.error as exc:
                raise EngineError(f"durable_rules failed on {name}: {exc}") from exc
            return list(set(fired))  # overlapping $or branches fire a rule more than once


adapter = Adapter()
