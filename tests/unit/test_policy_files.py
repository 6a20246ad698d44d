"""Every file in policies/, rules/ and schemas/ is valid: an operator's bad edit fails CI."""
import json

from jsonschema import Draft202012Validator

from app import policy
from app.config import ROOT
from app.schemas import SCHEMA_DIR, registry


def test_every_schema_is_a_valid_draft_2020_12_schema():
    registry.cache_clear()
    registry()  # every $id equals its path
    for path in sorted(SCHEMA_DIR.rglob("*.json")):
        Draft202012Validator.check_schema(json.loads(path.read_text(encoding="utf-8")))


def test_repository_policy_set_is_valid_and_examples_pass():
    ps, errors = policy.check(policy.read_root(ROOT))
    assert [str(e) for e in errors] == []
    assert ps.get("ruleset"), "the sample rulesets are missing"
    assert sum(len(d.get("examples") or ()) for d in ps.get("ruleset")) >= 5
    for kind in ps.kinds():
        assert (SCHEMA_DIR / "policies" / f"{kind}.json").exists()
