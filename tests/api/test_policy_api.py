"""Policy API over real HTTP: validate, apply (atomic, audited), active, versions, explain, decisions."""
import secrets

from app import policy
from tests.conftest import ENGINES, Http, make_token

THREE_MISTAKES = """kind: ruleset
version: 1
name: three_mistakes
mode: sometimes
rules:
  - name: a
    priority: high
    when: {field: amount, op: gte, value: 10}
    then: [{action: launch_rockets}]
"""


def disk_files(app):
    return policy.read_dirs(app.config["POLICY_DIR"], app.config["RULES_DIR"])


def extra_ruleset(name):
    return (f"kind: ruleset\nversion: 1\nname: {name}\nmode: first\nrules:\n"
            f"  - name: big\n    priority: 10\n    when: {{field: amount_fen, op: gte, value: 100}}\n"
            f"    then: [{{action: flag, label: big}}]\n"
            f"examples:\n  - input: {{amount_fen: 100}}\n    expect: {{rule: big}}\n")


def test_three_mistakes_on_three_lines_are_all_reported(app, http):
    files = dict(disk_files(app), **{"rules/three_mistakes.yaml": THREE_MISTAKES})
    r = http.post("/v1/policies/validate", json={"files": files})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["valid"] is False
    got = [e["text"] for e in body["errors"]]
    assert got == [
        "rules/three_mistakes.yaml:4:7: $.mode: 'sometimes' is not one of ['first', 'all'] [enum]",
        "rules/three_mistakes.yaml:7:15: $.rules[0].priority: 'high' is not of type 'integer' [type]",
        "rules/three_mistakes.yaml:9:21: $.rules[0].then[0].action: unknown action 'launch_rockets' "
        "(whitelist: " + ", ".join(__import__("app.engine.actions", fromlist=["x"]).names()) + ") [whitelist]",
    ]


def test_applying_a_broken_set_leaves_the_active_version_unchanged(app, http):
    before = http.get("/v1/policies/active").json()["version"]
    files = dict(disk_files(app), **{"rules/three_mistakes.yaml": THREE_MISTAKES})
    r = http.post("/v1/policies/apply", json={"files": files})
    assert r.status_code == 422
    assert r.headers["Content-Type"].startswith("application/problem+json")
    assert r.json()["code"] == "policy-invalid" and len(r.json()["errors"]) == 3
    assert http.get("/v1/policies/active").json()["version"] == before
    assert policy.active_version() == before


def test_a_partial_set_is_refused_and_names_what_is_missing(app, http):
    before = http.get("/v1/policies/active").json()["version"]
    files = {k: v for k, v in disk_files(app).items() if k != "policies/sla.yaml"}
    files = {k: v for k, v in files.items() if k != "rules/growth.yaml"}
    r = http.post("/v1/policies/apply", json={"files": files})
    assert r.status_code == 422 and r.json()["code"] == "policy-invalid"
    texts = [e["text"] for e in r.json()["errors"]]
    assert any("kind 'sla'" in t and "[required-kind]" in t for t in texts), texts
    assert any("ruleset named 'growth'" in t for t in texts), texts
    assert http.get("/v1/policies/active").json()["version"] == before


def test_apply_activates_records_history_and_audit_then_restore(app, http):
    original = disk_files(app)
    before = http.get("/v1/policies/active").json()["version"]
    name = "t_" + secrets.token_hex(4)
    files = dict(original, **{f"rules/{name}.yaml": extra_ruleset(name)})
    try:
        r = http.post("/v1/policies/apply", json={"files": files, "note": "test"})
        assert r.status_code == 200, r.text
        new = r.json()
        assert new["changed"] is True and new["previous"] == before and new["version"] != before
        again = http.post("/v1/policies/apply", json={"files": files}).json()
        assert again == {"version": new["version"], "previous": new["version"], "changed": False}
        active = http.get("/v1/policies/active").json()
        assert active["version"] == new["version"] and name in active["rulesets"]
        assert active["activated_by"].startswith("api_key:")
        hist = http.get("/v1/policies/activations").json()["items"]
        assert hist[0]["version"] == new["version"] and hist[0]["note"] == "test" and hist[0]["previous_version"] == before
        stored = http.get("/v1/policies/versions", params={"limit": 1000}).json()["items"]
        assert new["version"] in [v["version"] for v in stored] and stored[0]["files"] >= 1
        # a page at a time, newest first, each row once (versions: keyset on (created_at, version))
        for path, key in (("/v1/policies/versions", "version"), ("/v1/policies/activations", "seq")):
            whole = http.get(path, params={"limit": 1000}).json()
            seen, cursor = [], None
            for _ in range(3):
                page = http.get(path, params={"limit": 1, **({"cursor": cursor} if cursor else {})}).json()
                seen += [row[key] for row in page["items"]]
                cursor = page["next_cursor"]
                if cursor is None:
                    break
            assert seen == [row[key] for row in whole["items"][:3]], path
        assert http.get(f"/v1/policies/versions/{new['version']}").json()["files"] == files
        ev = http.post("/v1/decisions/explain", json={"ruleset": name, "facts": {"amount_fen": 150}}).json()
        assert ev["rule"] == "big" and ev["version"] == new["version"]
        from app.db import db
        from app.models.core import AuditLog
        with db.connection_context():
            assert AuditLog.select().where((AuditLog.action == "policy.apply")
                                           & (AuditLog.subject == new["version"])).count() == 1
    finally:
        r = http.post("/v1/policies/apply", json={"files": original})
        assert r.status_code == 200, r.text
    assert http.get("/v1/policies/active").json()["version"] == policy.PolicySet(original).version


def test_validate_without_files_checks_the_configured_folders(app, http):
    r = http.post("/v1/policies/validate", json={})
    assert r.status_code == 200
    assert r.json()["valid"] is True, r.json()["errors"]
    assert r.json()["version"] == policy.PolicySet(disk_files(app)).version


def test_explain_shows_each_leaf_and_the_version(http):
    facts = {"points": 60000, "member": {"level": "金牌"}, "account": {"status": "正常", "age_days": 400}}
    r = http.post("/v1/decisions/explain", json={"ruleset": "demo_risk", "facts": facts})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["rule"] == "large_redemption" and out["engines_agree"] is (True if "durable" in ENGINES else None)
    assert out["version"] == policy.active_version()
    big = next(x for x in out["rules"] if x["rule"] == "large_redemption")
    leaf = big["condition"]["children"][0]["children"][0]
    assert leaf == {"path": "when.any[0].all[0]", "field": "points", "op": "gte", "value": 50000,
                    "actual": 60000, "present": True, "result": True}
    assert out["inputs"]["points"] == 60000


def test_bad_requests_are_problems_not_500(http):
    r = http.post("/v1/decisions/explain", json={"ruleset": "no_such_ruleset", "facts": {}})
    assert r.status_code == 404 and r.json()["code"] == "unknown-ruleset"
    r = http.post("/v1/decisions/explain", json={"ruleset": "demo_risk", "facts": []})
    assert r.status_code == 422 and r.json()["code"] == "validation-failed"
    r = http.post("/v1/policies/validate", json={"files": {"../etc/passwd": "x"}})
    assert r.status_code == 422
    r = http.post("/v1/policies/validate", json={"files": {"policies/x.yaml": "a: [\n"}})
    assert r.status_code == 200 and r.json()["valid"] is False
    r = http.post("/v1/policies/validate", data="{nope", headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert http.get("/v1/policies/versions/zzzz").status_code == 404
    assert http.get("/v1/decisions").status_code == 422
    r = http.post("/v1/policies/apply", json={"files": {}})
    assert r.status_code == 422 and r.json()["code"] == "policy-invalid"
    assert http.post("/v1/policies/validate", data=b"", headers={"Content-Type": "application/json"}).status_code == 400


def test_scopes(server):
    reader = Http(server, make_token(["policy:read"]))
    assert reader.get("/v1/policies/active").status_code == 200
    r = reader.post("/v1/policies/apply", json={"files": {}})
    assert r.status_code == 403 and r.json()["required_scope"] == "policy:write"
    assert Http(server, make_token(["tickets:read"])).post("/v1/policies/validate", json={}).status_code == 403


def test_decision_log_record_and_read(db_conn, http):
    from app.db import write_transaction
    from app.policy import decisions
    subject = "test:" + secrets.token_hex(4)
    with write_transaction():
        d1 = decisions.record("demo_risk", "v1", "large_redemption", subject, {"points": 60000},
                              {"actions": [{"action": "require_review"}]})
        decisions.record("demo_risk", "v1", None, subject, {"points": 1}, {"actions": []})
    page = http.get("/v1/decisions", params={"subject": subject}).json()
    assert page["next_cursor"] is None
    rows = page["items"]
    assert [r["decision_id"] for r in rows][0] == d1 and len(rows) == 2
    assert rows[0]["inputs"] == {"points": 60000} and rows[0]["rule"] == "large_redemption"
    assert rows[1]["rule"] is None and len(rows[0]["input_digest"]) == 64
    assert decisions.for_subject(subject) == rows
    # a page at a time, oldest first: the cursor goes on from the last row, each row once
    first = http.get("/v1/decisions", params={"subject": subject, "limit": 1}).json()
    assert first["items"] == rows[:1] and first["next_cursor"]
    rest = http.get("/v1/decisions", params={"subject": subject, "limit": 1, "cursor": first["next_cursor"]}).json()
    assert rest == {"items": rows[1:], "next_cursor": None}
    assert http.get("/v1/decisions", params={"subject": subject, "cursor": "nonsense"}).status_code == 422


def test_active_set_survives_a_restart(app, http):
    """A new process (simulated: the in-process cache dropped) loads the stored set, not the files on disk."""
    original = disk_files(app)
    name = "t_" + secrets.token_hex(4)
    files = dict(original, **{f"rules/{name}.yaml": extra_ruleset(name)})
    try:
        applied = http.post("/v1/policies/apply", json={"files": files}).json()["version"]
        policy._active = None
        policy.startup(app)
        assert policy.active_version() == applied and policy.active().ruleset(name)
    finally:
        assert http.post("/v1/policies/apply", json={"files": original}).status_code == 200
    assert policy.active_version() == policy.PolicySet(original).version
