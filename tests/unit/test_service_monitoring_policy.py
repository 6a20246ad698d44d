"""The monitoring policy: a threshold for a skill group the service policy lacks, or a bad value, is refused."""
import yaml

from app.policy.sets import read_dirs


def _check(app, edit, name="policies/monitoring.yaml"):
    from app import policy
    files = read_dirs(app.config["POLICY_DIR"], app.config["RULES_DIR"])
    doc = yaml.safe_load(files[name])
    edit(doc)
    files[name] = yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)
    _, errors = policy.check(files)
    return [str(e) for e in errors]


def test_sample_monitoring_policy_is_valid(app):
    assert _check(app, lambda doc: None) == []


def test_thresholds_name_existing_skill_groups(app):
    errors = _check(app, lambda doc: doc["alerts"]["groups"].update(nowhere={"queue_length": 5}))
    assert any("policies/monitoring.yaml" in e and "$.alerts.groups.nowhere" in e and "unknown skill group" in e
               for e in errors), errors
    # removing the group from the service policy breaks the monitoring file that names it
    errors = _check(app, lambda doc: doc["groups"].pop("vip") and doc["groups"].pop("dedicated"),
                    name="policies/service.yaml")
    assert any("$.alerts.groups.vip" in e for e in errors), errors


def test_schema_refuses_zero_thresholds_rates_over_100_and_unknown_metrics(app):
    def edit(doc):
        doc["alerts"]["defaults"].update(queue_length=0, refusal_rate_percent=150, queue_lenght=3)
    errors = _check(app, edit)
    for needle in ("queue_length", "refusal_rate_percent", "queue_lenght"):
        assert any(needle in e for e in errors), (needle, errors)


def test_threshold_lookup_prefers_the_group_field_by_field(app):
    from app.services.service.monitoring import MonitoringConfig
    doc = yaml.safe_load(open(app.config["POLICY_DIR"] + "/monitoring.yaml", encoding="utf-8"))
    cfg = MonitoringConfig(version="v", doc=doc)
    assert cfg.threshold("vip", "queue_length") == (20, "alerts.groups.vip.queue_length")
    assert cfg.threshold("vip", "sla_at_risk") == (10, "alerts.defaults.sla_at_risk")
    assert cfg.threshold("general", "queue_length") == (100, "alerts.defaults.queue_length")
