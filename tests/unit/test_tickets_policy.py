"""Ticket policies: the sample set passes its cross-checks; broken workflows, roles and routing targets are named."""
import copy
from pathlib import Path

import pytest
import yaml

from app.services.tickets import policy as tickets_policy

ROOT = Path(__file__).resolve().parents[2]


class FakeSet:
    """Just enough of a policy set for cross_check: documents by kind."""

    def __init__(self, docs):
        self.docs = docs

    def get(self, kind):
        return [d for d in self.docs if d.get("kind") == kind]


def load_sample():
    docs = []
    for rel in ("policies/tickets.yaml", "policies/staff.yaml", "policies/sla.yaml", "policies/calendar.yaml",
                "rules/ticket_routing.yaml", "rules/ticket_priority.yaml", "policies/ledger.yaml"):
        doc = yaml.safe_load((ROOT / rel).read_text(encoding="utf-8"))
        doc["_file"] = rel
        docs.append(doc)
    return docs


def by_kind(docs, kind, name=None):
    return next(d for d in docs if d["kind"] == kind and (name is None or d.get("name") == name))


def test_sample_policies_pass_cross_checks():
    assert tickets_policy.cross_check(FakeSet(load_sample())) == []


def test_sample_has_all_categories_and_a_two_level_approval():
    tickets = by_kind(load_sample(), "tickets")
    assert set(tickets["categories"]) == {"物流/配送", "退换货", "退款争议", "发票", "商品质量", "账户/会员", "投诉", "赔付审批"}
    levels = {t["approval"]["level"] for t in tickets["workflows"]["refund_dispute"]["transitions"]
              if t.get("approval")}
    assert levels == {1, 2}


def test_sample_policies_match_their_schemas():
    from app.schemas import errors_of
    for kind in ("tickets", "staff", "sla", "calendar"):
        doc = yaml.safe_load((ROOT / "policies" / f"{kind}.yaml").read_text(encoding="utf-8"))
        assert errors_of(f"policies/{kind}.json", doc) == [], kind


def _errors(mutate):
    docs = copy.deepcopy(load_sample())
    mutate(docs)
    return tickets_policy.cross_check(FakeSet(docs))


def test_unreachable_state_and_dead_end_reported():
    def mutate(docs):
        wf = by_kind(docs, "tickets")["workflows"]["standard"]
        wf["states"]["limbo"] = {"label": "x", "user_status": "x"}
    errors = _errors(mutate)
    assert any("states.limbo: unreachable" in e for e in errors)
    assert any("states.limbo: non-terminal state has no way out" in e for e in errors)


def test_no_path_to_terminal_reported():
    def mutate(docs):
        wf = by_kind(docs, "tickets")["workflows"]["standard"]
        wf["states"]["loop_a"] = {"label": "a", "user_status": "a"}
        wf["states"]["loop_b"] = {"label": "b", "user_status": "b"}
        wf["transitions"] += [{"name": "to_a", "from": ["new"], "to": "loop_a"},
                              {"name": "a_b", "from": ["loop_a"], "to": "loop_b"},
                              {"name": "b_a", "from": ["loop_b"], "to": "loop_a"}]
    errors = _errors(mutate)
    assert any("states.loop_a: no terminal state can be reached" in e for e in errors)


def test_unknown_roles_states_and_workflows_reported():
    def mutate(docs):
        t = by_kind(docs, "tickets")
        t["workflows"]["standard"]["transitions"][0]["roles"] = ["wizard"]
        t["workflows"]["standard"]["transitions"][1]["to"] = "nowhere"
        t["categories"]["发票"]["workflow"] = "missing"
        t["workflows"]["refund_dispute"]["states"]["approval_l1"]["on_enter"][0]["role"] = "ghost"
    errors = "\n".join(_errors(mutate))
    assert "unknown role 'wizard'" in errors and "unknown state 'nowhere'" in errors
    assert "unknown workflow 'missing'" in errors and "unknown role 'ghost'" in errors
    assert "policies/tickets.yaml: $.workflows.standard.transitions[0].roles" in errors


def test_compensation_asset_must_be_a_lot_asset():
    def mutate(docs):
        wf = by_kind(docs, "tickets")["workflows"]["quality"]
        wf["states"]["compensating"]["on_enter"][0]["asset"] = "CNY"
        wf["states"]["resolved"]["on_enter"].append({"action": "compensate", "asset": "GOLD", "amount_fen": 1})
    errors = "\n".join(_errors(mutate))
    assert "'CNY' is not held in lots" in errors and "unknown asset 'GOLD'" in errors


def test_routing_targets_must_exist():
    def mutate(docs):
        rs = by_kind(docs, "ruleset", "ticket_routing")
        rs["rules"][0]["then"][0] = {"action": "route_to", "department": "finance", "queue": "nope"}
        rs["rules"][1]["then"][0] = {"action": "route_to", "department": "legal"}
    errors = "\n".join(_errors(mutate))
    assert "has no queue 'nope'" in errors and "unknown department 'legal'" in errors
    assert "rules/ticket_routing.yaml: $.rules[0].then[0].queue" in errors


def test_sla_references_checked():
    def mutate(docs):
        s = by_kind(docs, "sla")
        s["targets"]["P1"]["calendar"] = "lunar"
        s["overrides"][0]["category"] = "火星"
        s["escalation"]["assign_role"] = "king"
    errors = "\n".join(_errors(mutate))
    assert "unknown calendar 'lunar'" in errors and "unknown category '火星'" in errors
    assert "unknown role 'king'" in errors


@pytest.mark.parametrize("cond,facts,expected", [
    ({"field": "amount_fen", "op": "gte", "value": 50000}, {"amount_fen": 50000}, True),
    ({"field": "amount_fen", "op": "gte", "value": 50000}, {}, False),
    ({"not": {"field": "amount_fen", "op": "exists", "value": True}}, {"amount_fen": None}, True),
    ({"field": "user.level", "op": "in", "value": ["金牌"]}, {"user": {"level": "金牌"}}, True),
    ({"any": [{"field": "text", "op": "contains", "value": "发票"}, {"always": True}]}, {}, True),
    ({"all": [{"field": "x", "op": "between", "value": [1, 3]}, {"field": "y", "op": "ne", "value": 1}]},
     {"x": 2, "y": 2}, True),
    ({"field": "x", "op": "gt", "value": 1}, {"x": "str"}, False),
])
def test_guard_conditions(cond, facts, expected):
    assert tickets_policy.matches(cond, facts) is expected


def test_demo_seed_is_idempotent(app, db_conn):
    from app.models.staff import Department, Staff
    from app.services import tickets
    tickets.seed_demo()
    tickets.seed_demo()
    assert Staff.select().where(Staff.staff_no == "S-fin-mgr").count() == 1
    assert {d.code for d in Department.select().where(Department.active)} >= {"cs", "finance", "logistics"}
