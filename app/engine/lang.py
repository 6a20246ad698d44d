"""Reference evaluator of the rule language: plain Python, the semantics every engine must agree with.

Semantics (docs/policy.md): a dotted ``field`` reads nested mappings; a missing field or a null value
is *missing*. Every leaf on a missing field is false except ``exists: false``. Comparisons are
type-strict: numbers (int/float, never booleans) only equal numbers, strings strings, booleans
booleans; ``gt/gte/lt/lte/between`` hold only for numbers. ``ne``/``not_in`` need the field present
(present and not equal). ``contains`` is substring on strings and membership on lists.
"""
import math

MISSING = object()
OPS = ("eq", "ne", "gt", "gte", "lt", "lte", "between", "in", "not_in", "contains", "starts_with", "exists")


def lookup(facts, path):
    """The value at a dotted path, or MISSING (absent, null, or through a non-mapping)."""
    cur = facts
    for part in path:
        if not isinstance(cur, dict):
            return MISSING
        cur = cur.get(part, MISSING)
        if cur is MISSING:
            return MISSING
    return MISSING if cur is None else cur


def tclass(v):
    """'b' bool, 'n' number, 's' string, 'l' list, 'o' other (mapping, NaN), '-' missing."""
    if v is MISSING:
        return "-"
    if isinstance(v, bool):
        return "b"
    if isinstance(v, (int, float)):
        return "o" if isinstance(v, float) and math.isnan(v) else "n"
    if isinstance(v, str):
        return "s"
    if isinstance(v, list):
        return "l"
    return "o"


def same(x, v):
    """Type-strict equality."""
    return tclass(x) == tclass(v) and x == v


def leaf_fn(op, value):
    """A predicate over the field's value for one leaf."""
    if op == "eq":
        t = tclass(value)
        if t == "s":  # only a string equals a string: no type check after a match
            return lambda x: x == value
        return lambda x: x == value and tclass(x) == t
    if op == "ne":
        t = tclass(value)
        return lambda x: x is not MISSING and not (x == value and tclass(x) == t)
    if op in ("gt", "gte", "lt", "lte"):
        cmp = {"gt": lambda x: x > value, "gte": lambda x: x >= value,
               "lt": lambda x: x < value, "lte": lambda x: x <= value}[op]
        return lambda x: tclass(x) == "n" and cmp(x)
    if op == "between":
        lo, hi = value
        return lambda x: tclass(x) == "n" and lo <= x <= hi
    if op == "in":
        return lambda x: x is not MISSING and any(same(x, v) for v in value)
    if op == "not_in":
        return lambda x: x is not MISSING and not any(same(x, v) for v in value)
    if op == "contains":
        def contains(x):
            if isinstance(x, str):
                return isinstance(value, str) and value in x
            if isinstance(x, list):
                return any(same(i, value) for i in x)
            return False
        return contains
    if op == "starts_with":
        return lambda x: isinstance(x, str) and isinstance(value, str) and x.startswith(value)
    if op == "exists":
        return lambda x: (x is not MISSING) == bool(value)
    raise ValueError(f"unknown op {op!r}")


def compile_condition(cond):
    """A function facts -> bool for a (schema-valid) condition."""
    if "all" in cond:
        parts = [compile_condition(c) for c in cond["all"]]
        return lambda f: all(p(f) for p in parts)
    if "any" in cond:
        parts = [compile_condition(c) for c in cond["any"]]
        return lambda f: any(p(f) for p in parts)
    if "not" in cond:
        inner = compile_condition(cond["not"])
        return lambda f: not inner(f)
    if "always" in cond:
        const = bool(cond["always"])
        return lambda f: const
    path = tuple(cond["field"].split("."))
    pred = leaf_fn(cond["op"], cond.get("value"))
    if len(path) == 1:
        key = path[0]

        def flat(f):
            x = f.get(key, MISSING) if isinstance(f, dict) else MISSING
            return pred(MISSING if x is None else x)
        return flat
    return lambda f: pred(lookup(f, path))


def trace(cond, facts, path="when"):
    """Evaluate with an explanation: a tree of {path, op/field/value, actual, result}."""
    if "all" in cond or "any" in cond:
        key = "all" if "all" in cond else "any"
        kids = [trace(c, facts, f"{path}.{key}[{i}]") for i, c in enumerate(cond[key])]
        res = all(k["result"] for k in kids) if key == "all" else any(k["result"] for k in kids)
        return {"path": path, "op": key, "result": res, "children": kids}
    if "not" in cond:
        kid = trace(cond["not"], facts, f"{path}.not")
        return {"path": path, "op": "not", "result": not kid["result"], "children": [kid]}
    if "always" in cond:
        return {"path": path, "op": "always", "result": bool(cond["always"])}
    actual = lookup(facts, tuple(cond["field"].split(".")))
    res = leaf_fn(cond["op"], cond.get("value"))(actual)
    return {"path": path, "field": cond["field"], "op": cond["op"], "value": cond.get("value"),
            "actual": None if actual is MISSING else actual, "present": actual is not MISSING,
            "result": res}


def fields(cond, out=None):
    """Dotted field names used by a condition, in first-use order."""
    out = [] if out is None else out
    for key in ("all", "any"):
        for c in cond.get(key, ()):
            fields(c, out)
    if "not" in cond:
        fields(cond["not"], out)
    if "field" in cond and cond["field"] not in out:
        out.append(cond["field"])
    return out


def required_eq(cond):
    """{field: string} that a condition requires by an ``eq`` leaf on a top-level field (itself or in its ``all``)."""
    if "field" in cond:
        if cond["op"] == "eq" and isinstance(cond.get("value"), str) and "." not in cond["field"]:
            return {cond["field"]: cond["value"]}
        return {}
    out = {}
    for c in cond.get("all", ()):
        for k, v in required_eq(c).items():
            out.setdefault(k, v)
    return out


class ReferenceRuleset:
    """A ruleset compiled to Python closures; ``fire(facts)`` -> indexes of matching rules.

    Rules are indexed by the top-level field most of them require equal to a string (typically ``type``):
    a rule that requires another value of that field cannot match, so it is not evaluated. Answers are
    those of evaluating every rule.
    """

    def __init__(self, doc):
        self.doc = doc
        rules = doc["rules"]
        self.preds = [compile_condition(r["when"]) for r in rules]
        self.order = sorted(range(len(rules)), key=lambda i: (-rules[i].get("priority", 0), i))
        needs = [required_eq(r["when"]) for r in rules]
        counts = {}
        for need in needs:
            for k in need:
                counts[k] = counts.get(k, 0) + 1
        self.key = max(sorted(counts), key=counts.__getitem__) if counts and max(counts.values()) > 1 else None
        self.free = [i for i in range(len(rules)) if self.key not in needs[i]]
        self.by_value = {}
        for value in {n[self.key] for n in needs if self.key in n}:
            self.by_value[value] = [i for i in range(len(rules)) if needs[i].get(self.key, value) == value]
        rank = {i: r for r, i in enumerate(self.order)}
        self.free_ordered = sorted(self.free, key=rank.__getitem__)
        self.by_value_ordered = {v: sorted(ix, key=rank.__getitem__) for v, ix in self.by_value.items()}
        # A rule whose whole condition is the indexed ``eq`` holds for every facts it is a candidate for.
        self.implied = [set(r["when"]) == {"field", "op", "value"} and needs[i].get(self.key) is not None
                        for i, r in enumerate(rules)]
        # A key value whose candidates are all implied has one answer whatever the other facts: kept (firing order).
        self.settled = {v: tuple(ix) for v, ix in self.by_value_ordered.items() if all(self.implied[i] for i in ix)}

    def candidates(self, facts, ordered=False):
        """Indexes of the rules that can match ``facts`` (file order, or firing order when ``ordered``)."""
        if self.key is None:
            return self.order if ordered else range(len(self.preds))
        x = facts.get(self.key) if isinstance(facts, dict) else None
        if ordered:
            return self.by_value_ordered.get(x, self.free_ordered) if isinstance(x, str) else self.free_ordered
        return self.by_value.get(x, self.free) if isinstance(x, str) else self.free

    def fire(self, facts, ordered=False, first=False):
        """Indexes of the matching rules (file order, or firing order when ``ordered``; ``first``: at most one)."""
        preds = self.preds
        x = facts.get(self.key) if self.key is not None and isinstance(facts, dict) else None
        if ordered and isinstance(x, str):
            settled = self.settled.get(x)
            if settled is not None:
                return list(settled[:1] if first else settled)
        implied = self.implied if isinstance(x, str) and x in self.by_value else None
        out = []
        for i in self.candidates(facts, ordered):
            if (implied is not None and implied[i]) or preds[i](facts):
                out.append(i)
                if first:
                    break
        return out
