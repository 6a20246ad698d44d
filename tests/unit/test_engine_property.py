"""Property: durable_rules (through the adapter) and the reference evaluator agree on random rules and facts."""
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.engine import lang
from app.engine.durable import adapter
from app.engine import ruleset_hash

FIELDS = ["a", "b", "s", "c.d", "c.e", "tags"]
# regex metacharacters, characters the adapter cannot escape, Chinese, and plain letters
ALPHABET = "ab.*+?|(){}[]\\^$-投诉金牌 \n"
texts = st.text(alphabet=ALPHABET, max_size=6)
numbers = st.one_of(st.integers(-5, 5), st.sampled_from([0.5, -1.5, 2.0, 10**15, -10**15]))
scalars = st.one_of(numbers, texts, st.booleans())
fact_values = st.one_of(scalars, st.none(), st.lists(scalars, max_size=4),
                        st.sampled_from([{"x": 1}, 10**20, -10**20, float("inf")]))


def leaves():
    field = st.sampled_from(FIELDS)
    return st.one_of(
        st.builds(lambda f, op, v: {"field": f, "op": op, "value": v}, field, st.sampled_from(["eq", "ne"]), scalars),
        st.builds(lambda f, op, v: {"field": f, "op": op, "value": v}, field,
                  st.sampled_from(["gt", "gte", "lt", "lte"]), numbers),
        st.builds(lambda f, lo, hi: {"field": f, "op": "between", "value": [lo, hi]}, field, numbers, numbers),
        st.builds(lambda f, op, v: {"field": f, "op": op, "value": v}, field, st.sampled_from(["in", "not_in"]),
                  st.lists(scalars, min_size=1, max_size=4)),
        st.builds(lambda f, v: {"field": f, "op": "contains", "value": v}, field, scalars),
        st.builds(lambda f, v: {"field": f, "op": "starts_with", "value": v}, field, texts),
        st.builds(lambda f, v: {"field": f, "op": "exists", "value": v}, field, st.booleans()),
        st.just({"always": True}),
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


CASES = {"n": 0}


@settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(conditions, min_size=1, max_size=5), st.lists(facts_strategy(), min_size=5, max_size=10))
def test_durable_agrees_with_reference(whens, factses):
    doc = {"kind": "ruleset", "version": 1, "name": "prop", "mode": "all",
           "rules": [{"name": f"r{i}", "priority": 0, "when": w, "then": []} for i, w in enumerate(whens)]}
    # mode first: priorities with ties, so the event path must pick by priority then file order
    first = dict(doc, mode="first", rules=[dict(r, priority=i % 3) for i, r in enumerate(doc["rules"])])
    order = sorted(range(len(whens)), key=lambda i: (-(i % 3), i))
    name, name_first = f"prop@{ruleset_hash(doc)}", f"propf@{ruleset_hash(first)}"
    adapter.register(name, doc)
    adapter.register(name_first, first)
    ref = lang.ReferenceRuleset(doc)
    try:
        for facts in factses:
            facts = json.loads(json.dumps(facts, allow_nan=True))
            expected = ref.fire(facts)
            got = sorted(adapter.fire(name, facts))
            assert got == expected, (json.dumps(whens, ensure_ascii=False), facts)
            top = [i for i in order if i in expected][:1]
            assert adapter.fire(name_first, facts) == top, (json.dumps(whens, ensure_ascii=False), facts)
            CASES["n"] += 1
    finally:
        adapter.unregister(name)
        adapter.unregister(name_first)


def test_at_least_a_thousand_cases_were_compared():
    # runs after the property test in file order
    assert CASES["n"] >= 1000, CASES
