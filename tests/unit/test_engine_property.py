"""Property: durable_rules (through the adapter) and the reference evaluator agree on random rules and facts.

Only comparisons where durable_rules really decides count: a rule the adapter turns wholly into a derived
fact (computed by the reference predicate itself) agrees by construction, so it is generated (every
fallback path must work) but not counted.
"""
import json
import re
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.engine import durable, lang
from app.engine.durable import adapter
from app.engine import ruleset_hash

pytestmark = pytest.mark.durable

FIELDS = ["a", "b", "s", "c.d", "c.e", "tags"]
# regex metacharacters, characters the adapter cannot escape, Chinese, and plain letters
ALPHABET = "ab.*+?|(){}[]\\^$-投诉金牌 \n"
texts = st.text(alphabet=ALPHABET, max_size=6)
# texts with a regex metacharacter the adapter escapes ([c]) and none it cannot: the native $mt path
meta_texts = st.text(alphabet="ab.*+?|(){}-投", min_size=1, max_size=5).filter(lambda t: set(t) & set(".*+?|(){}"))
numbers = st.one_of(st.integers(-5, 5), st.sampled_from([0.5, -1.5, 2.0, 10**15, -10**15]))
scalars = st.one_of(numbers, texts, st.booleans())
fact_values = st.one_of(scalars, st.none(), st.lists(scalars, max_size=4),
                        st.sampled_from([{"x": 1}, 10**20, -10**20, float("inf")]))
# more values than durable.MAX_IN: the derived-fact path of in/not_in (with the small values facts hold)
long_lists = st.lists(st.one_of(st.integers(-5, 200), texts), min_size=durable.MAX_IN + 1,
                      max_size=durable.MAX_IN + 20)


def leaf(f, op, v):
    return {"field": f, "op": op, "value": v}


# a conjunction of wide in-lists expands into more than MAX_ALTERNATIVES branches: the whole rule is derived
over_expanding = st.builds(
    lambda fs, vs: {"all": [leaf(f, "in", vs) for f in fs]},
    st.lists(st.sampled_from(FIELDS), min_size=3, max_size=3, unique=True),
    st.lists(st.integers(-5, 20), min_size=8, max_size=12, unique=True))


def leaves():
    field = st.sampled_from(FIELDS)
    return st.one_of(
        st.builds(leaf, field, st.sampled_from(["eq", "ne"]), scalars),
        st.builds(leaf, field, st.sampled_from(["gt", "gte", "lt", "lte"]), numbers),
        st.builds(lambda f, lo, hi: leaf(f, "between", [lo, hi]), field, numbers, numbers),
        st.builds(leaf, field, st.sampled_from(["in", "not_in"]), st.lists(scalars, min_size=1, max_size=4)),
        st.builds(leaf, field, st.sampled_from(["in", "not_in"]), long_lists),
        st.builds(leaf, field, st.just("contains"), scalars),
        st.builds(leaf, field, st.sampled_from(["contains", "starts_with"]), meta_texts),
        st.builds(leaf, field, st.just("starts_with"), texts),
        st.builds(leaf, field, st.just("exists"), st.booleans()),
        st.just({"always": True}),
        over_expanding,
    )


conditions = st.recursive(
    leaves(),
    lambda inner: st.one_of(st.builds(lambda xs: {"all": xs}, st.lists(inner, min_size=1, max_size=3)),
                            st.builds(lambda xs: {"any": xs}, st.lists(inner, min_size=1, max_size=3)),
                            st.builds(lambda x: {"not": x}, inner)),
    max_leaves=6)


def facts_strategy():
    c = st.one_of(st.fixed_dictionaries({}, optional={"d": fact_values, "e": fact_values}), fact_values)
    return st.fixed_dictionaries({}, optional={"a": fact_values, "b": fact_values, "s": fact_values,
                                               "tags": fact_values, "c": c})


def _leaves(cond, neg=False):
    if "all" in cond or "any" in cond:
        for x in cond.get("all", cond.get("any")):
            yield from _leaves(x, neg)
    elif "not" in cond:
        yield from _leaves(cond["not"], not neg)
    elif "field" in cond:
        yield cond, neg


def paths(when, compiled_condition):
    """Which adapter paths a rule's condition takes."""
    out = set()
    if re.fullmatch(r"d\d+", next(iter(compiled_condition))) and len(compiled_condition) == 1:
        out.add("derived-whole-rule" if "field" not in when else "derived-leaf-rule")
    for c, neg in _leaves(when):
        v = c.get("value")
        if c["op"] in ("in", "not_in") and len(v) > durable.MAX_IN:
            out.add("derived-long-in")
        if c["op"] in ("contains", "starts_with") and isinstance(v, str):
            if set(v) & durable._UNESCAPABLE or neg:
                out.add("derived-text")
            elif set(v) & durable._REGEX_META:
                out.add("escaped-regex")
    if "field" not in when and durable.alternatives(durable._Compiler({}).cond(when)) > durable.MAX_ALTERNATIVES:
        out.add("over-expanding")
    return out


def compare(whens, factses, stats):
    doc = {"kind": "ruleset", "version": 1, "name": "prop", "mode": "all",
           "rules": [{"name": f"r{i}", "priority": 0, "when": w, "then": []} for i, w in enumerate(whens)]}
    # mode first: priorities with ties, so the event path must pick by priority then file order
    first = dict(doc, mode="first", rules=[dict(r, priority=i % 3) for i, r in enumerate(doc["rules"])])
    order = sorted(range(len(whens)), key=lambda i: (-(i % 3), i))
    name, name_first = f"prop@{ruleset_hash(doc)}", f"propf@{ruleset_hash(first)}"
    compiled = adapter.register(name, doc)
    adapter.register(name_first, first)
    ref = lang.ReferenceRuleset(doc)
    real = []  # rules durable_rules really evaluates (not a single derived fact)
    for i, w in enumerate(whens):
        p = paths(w, compiled.rules[f"r{i}"]["all"][0]["m"])
        stats.update(p)
        if not {"derived-whole-rule", "derived-leaf-rule"} & p:
            real.append(i)
    try:
        for facts in factses:
            facts = json.loads(json.dumps(facts, allow_nan=True))
            expected = ref.fire(facts)
            got = sorted(adapter.fire(name, facts))
            assert got == expected, (json.dumps(whens, ensure_ascii=False), facts)
            top = [i for i in order if i in expected][:1]
            assert adapter.fire(name_first, facts) == top, (json.dumps(whens, ensure_ascii=False), facts)
            stats["real"] += len(real)
            stats["real-matches"] += len(set(real) & set(expected))
    finally:
        adapter.unregister(name)
        adapter.unregister(name_first)


def test_durable_agrees_with_reference():
    stats = Counter()

    @settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(st.lists(conditions, min_size=1, max_size=5), st.lists(facts_strategy(), min_size=5, max_size=10))
    def check(whens, factses):
        compare(whens, factses, stats)

    check()
    # every fallback path was generated and still agreed ...
    for path in ("derived-long-in", "derived-text", "escaped-regex", "over-expanding", "derived-whole-rule"):
        assert stats[path] >= 5, (path, stats)
    # ... and enough (rule, facts) pairs were decided by durable_rules itself, matches included
    assert stats["real"] >= 2000 and stats["real-matches"] >= 200, stats
