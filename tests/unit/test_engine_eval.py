"""Rule language semantics, firing order, modes, whitelist, and the durable_rules adapter under threads."""
import threading

import pytest

from app import engine
from app.engine import actions, lang
from app.engine.durable import adapter
from app.errors import Problem
from app.policy import PolicySet, check
from tests.conftest import ENGINES


def leaf(field, op, value):
    return lang.compile_condition({"field": field, "op": op, "value": value})


@pytest.mark.parametrize("op,value,facts,expected", [
    ("eq", 5, {"x": 5.0}, True), ("eq", 5, {"x": "5"}, False), ("eq", 1, {"x": True}, False),
    ("eq", True, {"x": 1}, False), ("eq", "a", {}, False), ("eq", "a", {"x": None}, False),
    ("ne", 5, {"x": 6}, True), ("ne", 5, {"x": "5"}, True), ("ne", 5, {}, False),
    ("gt", 5, {"x": 6}, True), ("gt", 5, {"x": "6"}, False), ("gte", 5, {"x": 5}, True),
    ("lt", 5, {"x": True}, False), ("lte", 0, {"x": -1}, True),
    ("between", [1, 3], {"x": 3}, True), ("between", [1, 3], {"x": 4}, False),
    ("in", ["金牌", "钻石"], {"x": "金牌"}, True), ("in", [1], {"x": "1"}, False),
    ("not_in", ["a"], {"x": "b"}, True), ("not_in", ["a"], {}, False),
    ("contains", "投诉", {"x": "我要投诉"}, True), ("contains", "a", {"x": ["a", "b"]}, True),
    ("contains", 1, {"x": [True]}, False), ("contains", "a", {"x": 5}, False),
    ("starts_with", "VIP", {"x": "VIP-1"}, True), ("starts_with", "VIP", {"x": "a VIP"}, False),
    ("exists", True, {"x": 0}, True), ("exists", False, {}, True), ("exists", False, {"x": None}, True),
])
def test_leaf_semantics(op, value, facts, expected):
    assert leaf("x", op, value)(facts) is expected


def test_dotted_paths_read_nested_facts_and_missing_through_scalars():
    f = leaf("user.level", "eq", "金牌")
    assert f({"user": {"level": "金牌"}}) and not f({"user": "金牌"}) and not f({})


def ps_with(rules_yaml, name="t_engine"):
    files = {f"rules/{name}.yaml": f"kind: ruleset\nversion: 1\nname: {name}\n" + rules_yaml}
    ps, errors = check(files, complete=False)
    assert errors == [], [str(e) for e in errors]
    return ps


def test_priority_then_file_order_and_modes():
    body = """rules:
  - {name: low, priority: 1, when: {always: true}, then: [{action: flag, label: low}]}
  - {name: tie_a, priority: 5, when: {field: a, op: eq, value: 1}, then: [{action: flag, label: a}]}
  - {name: tie_b, priority: 5, when: {field: a, op: gte, value: 1}, then: [{action: flag, label: b}]}
"""
    for eng in ENGINES:
        ps = ps_with("mode: all\n" + body, "t_all")
        ev = engine.evaluate("t_all", {"a": 1}, policy_set=ps, engine=eng)
        assert [m.rule for m in ev.matches] == ["tie_a", "tie_b", "low"]
        assert ev.actions() == [{"action": "flag", "label": x} for x in ("a", "b", "low")]
        ps = ps_with("mode: first\n" + body, "t_first")
        ev = engine.evaluate("t_first", {"a": 1}, policy_set=ps, engine=eng)
        assert [m.rule for m in ev.matches] == ["tie_a"] and ev.first.priority == 5
        assert ev.to_dict()["inputs"] == {"a": 1} and ev.version == ps.version


def test_no_match_is_an_empty_result_and_unknown_ruleset_a_problem():
    ps = ps_with("rules:\n  - {name: r, when: {field: a, op: eq, value: 1}, then: []}\n", "t_none")
    for eng in ENGINES:
        ev = engine.evaluate("t_none", {"a": 2}, policy_set=ps, engine=eng)
        assert ev.matches == [] and ev.first is None and ev.rule is None
    with pytest.raises(Problem) as exc:
        engine.evaluate("nope", {}, policy_set=ps)
    assert exc.value.code == "unknown-ruleset"
    with pytest.raises(Problem):
        engine.evaluate("t_none", ["not", "a", "mapping"], policy_set=ps)


@pytest.mark.durable
def test_durable_names_are_versioned_by_content():
    ps1 = ps_with("rules:\n  - {name: r, when: {field: a, op: eq, value: 1}, then: []}\n", "t_ver")
    ps2 = ps_with("rules:\n  - {name: r, when: {field: a, op: eq, value: 2}, then: []}\n", "t_ver")
    n1 = engine.compiled(ps1.ruleset("t_ver")).durable_name
    n2 = engine.compiled(ps2.ruleset("t_ver")).durable_name
    assert n1 != n2 and n1.startswith("t_ver@") and adapter.registered(n1) and adapter.registered(n2)
    assert engine.evaluate("t_ver", {"a": 1}, policy_set=ps1).rule == "r"
    assert engine.evaluate("t_ver", {"a": 1}, policy_set=ps2).rule is None


@pytest.mark.durable
def test_threads_share_the_adapter_safely():
    ps = ps_with("mode: all\nrules:\n"
                 "  - {name: even, when: {field: n, op: in, value: [0, 2, 4, 6, 8]}, then: []}\n"
                 "  - {name: big, when: {field: n, op: gte, value: 5}, then: []}\n", "t_threads")
    failures = []

    def work():
        for i in range(300):
            n = i % 10
            try:
                got = [m.rule for m in engine.evaluate("t_threads", {"n": n}, policy_set=ps, engine="durable").matches]
            except Exception as exc:  # a dying thread must fail the test, not end it quietly
                failures.append((n, repr(exc)))
                return
            want = (["even"] if n % 2 == 0 else []) + (["big"] if n >= 5 else [])
            if got != want:
                failures.append((n, got))
    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


def test_action_whitelist():
    actions.register("t_ping", {"type": "object", "properties": {"n": {"type": "integer"}}})
    actions.register("t_ping", {"type": "object", "properties": {"n": {"type": "integer"}}})  # same: no-op
    with pytest.raises(actions.ActionConflict):
        actions.register("t_ping", {"type": "object"})
    assert actions.errors({"action": "t_ping", "n": 1}) == []
    assert actions.errors({"action": "t_ping", "n": "x"})[0][2] == "type"
    assert actions.errors({"action": "t_nope"})[0][2] == "whitelist"


def test_cross_checks_from_kinds_are_reported_with_positions():
    from app.policy import kinds
    calls = []

    def check_fn(ps):
        calls.append(ps.version)
        return ["rules/t_kinds.yaml: $.rules[0].name: names must not be 'bad'"] if any(
            r["name"] == "bad" for d in ps.get("ruleset") for r in d["rules"]) else []
    kinds.register("ruleset", cross_check=check_fn)
    try:
        files = {"rules/t_kinds.yaml": "kind: ruleset\nversion: 1\nname: t_kinds\nrules:\n"
                                       "  - name: bad\n    when: {always: true}\n    then: []\n"}
        errors = check(files, complete=False)[1]
        assert [str(e) for e in errors] == [
            "rules/t_kinds.yaml:5:11: $.rules[0].name: names must not be 'bad' [cross-check]"]
        assert calls
    finally:
        kinds._checks["ruleset"].remove(check_fn)


def test_unknown_kind_and_missing_version():
    errors = check({"policies/x.yaml": "kind: nosuchkind\nversion: 1\n", "policies/y.yaml": "a: 1\n"})[1]
    text = [str(e) for e in errors]
    assert any(t.startswith("policies/x.yaml:1:7: $.kind: unknown kind 'nosuchkind'") for t in text)
    assert any(t.startswith("policies/y.yaml:1:1: $: missing 'kind'") for t in text)


def test_policy_set_interface():
    ps = PolicySet({"rules/a.yaml": "kind: ruleset\nversion: 1\nname: a\nrules: []\n"})
    assert len(ps.version) == 16 and ps.get("ruleset")[0]["_file"] == "rules/a.yaml"
    assert ps.ruleset("a")["name"] == "a" and ps.one("ruleset")["name"] == "a"
    with pytest.raises(KeyError):
        ps.one("membership")


def test_rule_and_ruleset_names_must_be_unique():
    rs = "kind: ruleset\nversion: 1\nname: t_dup\nrules:\n" \
         "  - {name: a, when: {always: true}, then: []}\n  - {name: a, when: {always: true}, then: []}\n"
    errors = [str(e) for e in check({"rules/one.yaml": rs, "rules/two.yaml": rs}, complete=False)[1]]
    assert "rules/two.yaml:3:7: $.name: ruleset name 't_dup' is already used by rules/one.yaml [unique]" in errors
    assert "rules/one.yaml:6:12: $.rules[1].name: rule name 'a' repeats rules[0] [unique]" in errors


def test_engine_errors_are_problems():
    from app.engine.durable import EngineError
    err = EngineError("boom")
    assert isinstance(err, Problem) and err.status == 500 and err.code == "rules-engine-error"


def test_semantic_diff_of_policies_keys_lists_by_name():
    from app.policy.diff import diff, render
    a = {"policies/m.yaml": "kind: membership\nversion: 1\ntiers:\n  - {code: silver, name: 银牌, threshold: 1000}\n"
                            "  - {code: gold, name: 金牌, threshold: 5000}\n"}
    b = {"policies/m.yaml": "kind: membership\nversion: 1\ntiers:\n  - {code: silver, name: 银牌, threshold: 1000}\n"
                            "  - {code: gold, name: 金牌, threshold: 6000}\n  - {code: diamond, name: 钻石, threshold: 20000}\n"}
    lines = render(diff(a, b))
    assert "membership policies/m.yaml: changed $.tiers[金牌].threshold: 5000 -> 6000" in lines
    assert any(x.startswith("membership policies/m.yaml: added $.tiers[钻石]") for x in lines)
    assert render(diff(a, a)) == []


@pytest.mark.durable
def test_compiled_rulesets_are_bounded_and_evicted_ones_still_work(monkeypatch):
    monkeypatch.setattr(engine, "MAX_COMPILED", 4)
    sets = [ps_with(f"rules:\n  - {{name: r, when: {{field: a, op: eq, value: {i}}}, then: []}}\n", "t_evict")
            for i in range(10)]
    assert not adapter.registered("t_evict@" + engine.ruleset_hash(sets[0].ruleset("t_evict")))  # evicted
    for i, ps in enumerate(sets):
        assert engine.evaluate("t_evict", {"a": i}, policy_set=ps, engine="durable").rule == "r"


def test_large_in_lists_and_combinatorial_rules_compile_and_agree():
    big = list(range(0, 2000, 2))
    body = ("mode: all\nrules:\n"
            f"  - {{name: big_in, when: {{field: a, op: in, value: {big}}}, then: []}}\n"
            f"  - {{name: big_not_in, when: {{field: a, op: not_in, value: {big}}}, then: []}}\n"
            "  - name: product\n    when:\n      all:\n"
            f"        - {{field: a, op: in, value: {list(range(40))}}}\n"
            f"        - {{field: b, op: in, value: {list(range(40))}}}\n    then: []\n")
    ps = ps_with(body, "t_big")
    # these rules take the adapter's fallbacks (long in-lists and a 1600-branch product become derived
    # facts), so each engine is checked against the truth written here, not against the other one
    if "durable" in ENGINES:
        compiled = adapter.register(engine.compiled(ps.ruleset("t_big")).durable_name, ps.ruleset("t_big"))
        assert [next(iter(compiled.rules[r]["all"][0]["m"])) for r in ("r0", "r1", "r2")] == ["d0", "d1", "d2"]
    cases = [({"a": 4, "b": 3}, ["big_in", "product"]), ({"a": 5, "b": 39}, ["big_not_in", "product"]),
             ({"a": 1998, "b": 0}, ["big_in"]), ({"a": 40, "b": 0}, ["big_in"]),
             ({"a": "4"}, ["big_not_in"]), ({}, [])]
    for facts, want in cases:
        for eng in ENGINES:
            got = [m.rule for m in engine.evaluate("t_big", facts, policy_set=ps, engine=eng).matches]
            assert got == want, (eng, facts)


def test_reference_index_skips_only_rules_that_cannot_match():
    """Rules indexed by the string a top-level field must equal: same matches as evaluating every rule."""
    import itertools
    import random
    doc = {"name": "idx", "mode": "all", "rules": [
        {"name": "a", "priority": 1, "when": {"field": "type", "op": "eq", "value": "order_paid"}},
        {"name": "b", "priority": 5, "when": {"all": [{"field": "type", "op": "eq", "value": "sign_in"},
                                                      {"field": "n", "op": "gte", "value": 2}]}},
        {"name": "c", "when": {"any": [{"field": "type", "op": "eq", "value": "share"},
                                       {"field": "n", "op": "lt", "value": 0}]}},
        {"name": "d", "priority": 9, "when": {"field": "n", "op": "exists", "value": True}},
        {"name": "e", "when": {"all": [{"field": "type", "op": "eq", "value": "sign_in"},
                                       {"field": "type", "op": "eq", "value": "share"}]}},
        {"name": "f", "when": {"field": "type", "op": "eq", "value": "order_paid"}, "priority": 3},
    ]}
    ref = lang.ReferenceRuleset(doc)
    assert ref.key == "type"
    rng = random.Random(7)
    types = ["order_paid", "sign_in", "share", "other", 5, None, True, ["sign_in"]]
    for t, n in itertools.product(types, [None, -1, 0, 2, 3.5, "2"]):
        facts = {k: v for k, v in (("type", t), ("n", n)) if v is not None or rng.random() < 0.5}
        every = [i for i, p in enumerate(ref.preds) if p(facts)]
        assert ref.fire(facts) == every, facts
        ordered = [i for i in ref.order if ref.preds[i](facts)]
        assert [i for i in ref.candidates(facts, ordered=True) if ref.preds[i](facts)] == ordered, facts
    first = dict(doc, name="idx-first", mode="first")
    comp = engine.CompiledRuleset(first)
    assert [comp.rules[i]["name"] for i in comp.fire({"type": "sign_in", "n": 2}, "reference")] == ["d"]
    assert [comp.rules[i]["name"] for i in comp.fire({"type": "order_paid"}, "reference")] == ["f"]
