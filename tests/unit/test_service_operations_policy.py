"""The quality and workforce policies' cross-checks: a bad operator edit is refused with the file and path named."""
import yaml

from app.policy.sets import read_dirs


def _check(app, name, edit):
    from app import policy
    files = read_dirs(app.config["POLICY_DIR"], app.config["RULES_DIR"])
    doc = yaml.safe_load(files[f"policies/{name}"])
    edit(doc)
    files[f"policies/{name}"] = yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)
    _, errors = policy.check(files)
    return [str(e) for e in errors]


def test_sample_policies_are_valid(app):
    assert _check(app, "quality.yaml", lambda doc: None) == []
    assert _check(app, "workforce.yaml", lambda doc: None) == []


def test_quality_rubric_weights_strata_roles_and_calendar(app):
    def edit(doc):
        doc["calendar"] = "nope"
        doc["inspector_roles"] = ["ghost"]
        doc["rubric"]["items"]["greeting"]["weight"] = 11
        doc["rubric"]["items"]["privacy"]["weight"] = 5
        doc["rubric"]["items"]["extra"] = {"name": "无权重"}
        doc["strata"].append(dict(doc["strata"][0]))
        doc["strata"][1]["when"] = {"group": ["nowhere"], "category": ["不存在"]}
    errors = _check(app, "quality.yaml", edit)
    for needle in ("$.calendar: unknown calendar 'nope'", "$.inspector_roles[0]: unknown role 'ghost'",
                   "$.rubric.items: weights of the non-fatal items sum to 101, not 100",
                   "$.rubric.items.privacy.weight: a fatal item has no weight",
                   "$.rubric.items.extra: a non-fatal item needs a weight",
                   "named twice", "$.strata[1].when.group[0]: unknown skill group 'nowhere'",
                   "$.strata[1].when.category[0]"):
        assert any(needle in e and "policies/quality.yaml" in e for e in errors), (needle, errors)


def test_schemas_refuse_bad_rates_and_modes(app):
    errors = _check(app, "quality.yaml", lambda doc: doc["strata"][0].update(rate_percent=101))
    assert any("rate_percent" in e for e in errors), errors
    errors = _check(app, "workforce.yaml", lambda doc: doc.update(online_outside_shift="sometimes", calendar="x"))
    assert any("online_outside_shift" in e for e in errors), errors
    errors = _check(app, "workforce.yaml", lambda doc: doc.update(calendar="x"))
    assert any("$.calendar: unknown calendar 'x'" in e for e in errors), errors
