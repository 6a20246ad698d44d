"""The service policy's cross-checks: a bad operator edit is refused with the file and path named."""
import yaml

from app.policy.sets import read_dirs


def _check(app, edit):
    from app import policy
    files = read_dirs(app.config["POLICY_DIR"], app.config["RULES_DIR"])
    doc = yaml.safe_load(files["policies/service.yaml"])
    edit(doc)
    files["policies/service.yaml"] = yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)
    _, errors = policy.check(files)
    return [str(e) for e in errors]


def test_sample_service_policy_is_valid(app):
    assert _check(app, lambda doc: None) == []


def test_a_queue_named_by_a_service_benefit_must_be_a_skill_group(app):
    errors = _check(app, lambda doc: doc["groups"].pop("dedicated"))
    assert any("policies/benefits.yaml" in e and "svc_dedicated" in e and "'dedicated'" in e for e in errors), errors


def test_groups_name_existing_departments_roles_categories_and_calendar(app):
    def edit(doc):
        doc["calendar"] = "nope"
        doc["groups"]["general"].update(department="nowhere", roles=["ghost"], ticket_category="不存在")
    errors = _check(app, edit)
    for needle in ("$.calendar: unknown calendar 'nope'", "$.groups.general.department: unknown department",
                   "$.groups.general.roles[0]: unknown role 'ghost'", "$.groups.general.ticket_category"):
        assert any(needle in e for e in errors), (needle, errors)


def test_schema_refuses_a_negative_cap_and_an_unknown_timeout_outcome(app):
    def edit(doc):
        doc["groups"]["general"].update(queue_cap=-1, on_agent_timeout="explode")
    errors = _check(app, edit)
    assert any("queue_cap" in e for e in errors) and any("on_agent_timeout" in e for e in errors), errors


def test_the_compensation_approval_category_exists_and_its_workflow_pays_and_refuses(app):
    errors = _check(app, lambda doc: doc["compensation"].update(approval_category="不存在"))
    assert any("$.compensation.approval_category: unknown ticket category '不存在'" in e for e in errors), errors
    errors = _check(app, lambda doc: doc["compensation"].update(approval_category="投诉"))
    for action in ("pay_compensation", "refuse_compensation"):
        assert any("$.compensation.approval_category" in e and action in e for e in errors), (action, errors)
    errors = _check(app, lambda doc: doc["compensation"].pop("approval_category"))
    assert any("approval_category" in e for e in errors), errors
