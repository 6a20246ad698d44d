"""Ticket workflow guards speak the rulesets' condition language: a differential test against the retired matcher.

The tickets context had its own guard matcher (kept below, verbatim, as the reference of what shipped).
Over every guard of the sample policies and over generated well-typed conditions the engine's language
agrees with it; where they differ (documented cases at the bottom) the engine's semantics win.
"""
from pathlib import Path

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from app.engine import lang
from app.services.tickets import policy as tickets_policy

ROOT = Path(__file__).resolve().parents[2]

# ---- the retired matcher (app/services/tickets/policy.py before the one condition language) ----------
_MISSING = object()


def _old_lookup(facts, path):
    cur = facts
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return _MISSING
        cur = cur[part]
    return cur


def _old_cmp(op, left, right):
    try:
        if op == "gt":
            return left > right
        if op == "gte":
            return left >= right
        if op == "lt":
            return left < right
        if op == "lte":
            return left <= right
        if op == "between":
            return right[0] <= left <= right[1]
    except TypeError:
        return False
    raise ValueError(op)


def old_matches(cond, facts):
    if "all" in cond:
        return all(old_matches(c, facts) for c in cond["all"])
    if "any" in cond:
        return any(old_matches(c, facts) for c in cond["any"])
    if "not" in cond:
        return not old_matches(cond["not"], facts)
    if "always" in cond:
        return True
    value = _old_lookup(facts, cond["field"])
    op, expected = cond["op"], cond.get("value")
    if op == "exists":
        return (value is not _MISSING and value is not None) == (expected is not False)
    if value is _MISSING or value is None:
        return op == "ne" or op == "not_in"
    if op == "eq":
        return value == expected
    if op == "ne":
        return value != expected
    if op == "in":
        return value in (expected or ())
    if op == "not_in":
        return value not in (expected or ())
    if op == "contains":
        return isinstance(value, (str, list)) and expected in value
    if op == "starts_with":
        return isinstance(value, str) and value.startswith(str(expected))
    return _old_cmp(op, value, expected)


# ---- sample policies ------------------------------------------------------------------------------

def _sample_guards():
    doc = yaml.safe_load((ROOT / "policies" / "tickets.yaml").read_text(encoding="utf-8"))
    return [tr["when"] for wf in doc["workflows"].values() for tr in wf["transitions"] if tr.get("when")]


def test_the_sample_policies_have_guards():
    assert _sample_guards()


ticket_facts = st.fixed_dictionaries({}, optional={
    "amount_fen": st.one_of(st.none(), st.integers(-10, 10 ** 7)),
    "category": st.sampled_from(["物流/配送", "退换货", "退款争议"]),
    "priority": st.sampled_from(["P1", "P2", "P3", "P4"]),
    "channel": st.sampled_from(["app", "web", "phone"]),
    "tags": st.lists(st.sampled_from(["vip", "fraud", "refund"]), max_size=3),
    "user": st.fixed_dictionaries({}, optional={"level": st.sampled_from(["普通", "金牌"]), "paid": st.booleans()}),
})


@settings(max_examples=100, deadline=None)
@given(facts=ticket_facts)
def test_every_sample_guard_decides_as_before(facts):
    for cond in _sample_guards():
        assert tickets_policy.matches(cond, facts) == old_matches(cond, facts), cond


# ---- generated well-typed conditions --------------------------------------------------------------

FIELDS = {"n": st.integers(-5, 5), "s": st.sampled_from(["a", "ab", "b", "ba"]), "l": st.lists(
    st.sampled_from(["a", "b", "c"]), max_size=3)}


def _leaf(field):
    if field == "n":
        return st.one_of(
            st.builds(lambda op, v: {"field": "n", "op": op, "value": v},
                      st.sampled_from(["eq", "ne", "gt", "gte", "lt", "lte"]), st.integers(-5, 5)),
            st.builds(lambda lo, d: {"field": "n", "op": "between", "value": [lo, lo + d]},
                      st.integers(-5, 5), st.integers(0, 4)),
            st.builds(lambda op, vs: {"field": "n", "op": op, "value": vs},
                      st.sampled_from(["in", "not_in"]), st.lists(st.integers(-5, 5), min_size=1, max_size=4)))
    if field == "s":
        return st.one_of(
            st.builds(lambda op, v: {"field": "s", "op": op, "value": v},
                      st.sampled_from(["eq", "ne", "contains", "starts_with"]), st.sampled_from(["a", "b", "ab"])),
            st.builds(lambda op, vs: {"field": "s", "op": op, "value": vs}, st.sampled_from(["in", "not_in"]),
                      st.lists(st.sampled_from(["a", "ab", "b"]), min_size=1, max_size=3)))
    return st.builds(lambda v: {"field": "l", "op": "contains", "value": v}, st.sampled_from(["a", "b", "c"]))


leaves = st.one_of(st.sampled_from(list(FIELDS)).flatmap(_leaf),
                   st.just({"always": True}),
                   st.sampled_from(list(FIELDS)).map(lambda f: {"field": f, "op": "exists", "value": True}))
conditions = st.recursive(leaves, lambda kids: st.one_of(
    st.lists(kids, min_size=1, max_size=3).map(lambda cs: {"all": cs}),
    st.lists(kids, min_size=1, max_size=3).map(lambda cs: {"any": cs}),
    kids.map(lambda c: {"not": c})), max_leaves=8)


@settings(max_examples=200, deadline=None)
@given(cond=conditions, facts=st.fixed_dictionaries(FIELDS))
def test_generated_well_typed_conditions_agree_with_the_retired_matcher(cond, facts):
    assert tickets_policy.matches(cond, facts) == old_matches(cond, facts)
    assert tickets_policy.matches(cond, facts) == lang.compile_condition(cond)(facts)


# ---- where they differ: the engine's semantics (docs/policy.md) are the product's now ----------------

def test_documented_differences_follow_the_rulesets():
    cases = [
        ({"always": False}, {}, False),                                   # the retired matcher said True
        ({"field": "x", "op": "ne", "value": 1}, {}, False),              # missing is not "not equal"
        ({"field": "x", "op": "not_in", "value": [1]}, {"x": None}, False),
        ({"field": "flag", "op": "eq", "value": 1}, {"flag": True}, False),  # type-strict: True is not 1
        ({"field": "n", "op": "gte", "value": 1}, {"n": True}, False),
        ({"field": "s", "op": "starts_with", "value": 1}, {"s": "1x"}, False),
    ]
    for cond, facts, expected in cases:
        assert tickets_policy.matches(cond, facts) is expected, cond
        assert tickets_policy.matches(cond, facts) != old_matches(cond, facts), cond


def test_a_guard_outside_the_language_is_refused_by_the_one_schema():
    """``exists`` without a value meant "exists" to the retired matcher and "absent" to the engine; the
    one schema requires the value (the sample policy said ``{not: {op: exists}}`` until this check)."""
    from app.schemas import errors_of
    doc = yaml.safe_load((ROOT / "policies" / "tickets.yaml").read_text(encoding="utf-8"))
    wf = next(iter(doc["workflows"].values()))
    wf["transitions"][0]["when"] = {"field": "amount_fen", "op": "between", "value": [1]}
    assert errors_of("policies/tickets.json", doc)
    wf["transitions"][0]["when"] = {"field": "amount_fen", "op": "exists"}
    assert errors_of("policies/tickets.json", doc)
    wf["transitions"][0]["when"] = {"field": "amount_fen", "op": "between", "value": [1, 2]}
    assert not errors_of("policies/tickets.json", doc)
