"""Hostile policy text: every broken file is a 422 policy-invalid with file:line:col, and a request's
parsing has one budget (nodes, aliases, bytes, CPU) across all its files."""
import json
import re
import time

import pytest

from tests.conftest import make_token

BAD = {
    "nul": "kind: ledger\nname: a\x00b\n",
    "control": "kind: ledger\nname: a\x03b\n",
    "u+fffe": "kind: ledger\nname: a\ufffeb\n",
    "lone-surrogate": "kind: ledger\nname: a\ud800b\n",
    "deep-flow": "kind: ledger\nx: " + "[" * 5000 + "\n",
    "deep-block": "kind: ledger\nx:\n" + "".join("  " * i + "- \n" for i in range(200)),
}


@pytest.mark.parametrize("path", ["/v1/policies/validate", "/v1/policies/apply"])
@pytest.mark.parametrize("name", sorted(BAD))
def test_broken_policy_text_is_policy_invalid_with_a_position(http, path, name):
    r = http.post(path, json={"files": {"policies/bad.yaml": BAD[name]}})
    body = r.json()
    if path.endswith("validate"):
        assert r.status_code == 200 and body["valid"] is False, r.text
    else:
        assert r.status_code == 422 and body["code"] == "policy-invalid", r.text
    errors = [e for e in body["errors"] if e["file"] == "policies/bad.yaml"]
    assert errors and errors[0]["line"] >= 2 and errors[0]["column"] >= 1, errors
    assert errors[0]["text"].startswith(f"policies/bad.yaml:{errors[0]['line']}:{errors[0]['column']}: ")


def _laughs(n=8):
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for prev, cur in zip("abcdefgh"[:n - 1], "bcdefghi"[:n - 1]):
        lines.append(f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines) + "\n"


WORST = ["2000 alias bombs", "flat lists", "one big scalar", "rules/growth.yaml copied",
         "120 renamed copies of rules/ticket_priority.yaml"]


def _worst_body(label, limit, real):
    """The costliest bodies we found (each fills the 2 MiB body limit)."""
    if label == "2000 alias bombs":
        laughs = _laughs()
        return {f"policies/b{i}.yaml": laughs for i in range(min(2000, limit // (len(json.dumps(laughs)) + 40)))}
    if label == "flat lists":
        flat = "[" + ",".join(["1"] * 200_000) + "]"
        return {f"policies/f{i}.yaml": flat for i in range(max(1, limit // (len(flat) + 40)))}
    if label == "one big scalar":
        return {"policies/s.yaml": "x: " + "y" * 1_000_000}
    if label == "rules/growth.yaml copied":
        # real documents, many times over: everything after parsing (schemas, cross-checks, examples) runs
        text = real["rules/growth.yaml"]
        return {f"rules/growth_{i}.yaml": text for i in range(min(2000, limit // (len(json.dumps(text)) + 60)))}
    # rulesets renamed apart: each one is compiled and runs its examples (the costliest check per byte)
    text = real["rules/ticket_priority.yaml"]
    first = re.search(r"^name:\s*(\S+)", text, re.M)
    files = dict(real)
    files.update({f"rules/x_{i}.yaml": text.replace(first.group(0), f"name: {first.group(1)}_{i}")
                  for i in range(120)})
    return files


@pytest.mark.parametrize("label", WORST)
def test_one_request_costs_at_most_two_seconds_of_cpu(app, client, admin_token, label):
    """The in-process client runs the request in this thread, so thread_time is the request's CPU.

    (Measured on the test machine: at most ~1.6 s; the parse-and-check budget is 1.5 s of CPU.)
    """
    from app.policy import read_dirs
    real = read_dirs(app.config["POLICY_DIR"], app.config["RULES_DIR"])
    files = _worst_body(label, app.config["MAX_CONTENT_LENGTH"] - 1024, real)
    started = time.thread_time()
    r = client.post("/v1/policies/validate", json={"files": files}, headers={"Authorization": f"Bearer {admin_token}"})
    cpu = time.thread_time() - started
    print(f"validate {label}: {cpu:.2f} s CPU")
    assert r.status_code == 200, (label, r.status_code)
    assert "renamed" in label or r.json["valid"] is False, label
    assert cpu <= 2.0, f"{label}: {cpu:.2f} s of CPU for one request"


def test_the_budget_is_shared_by_every_file_of_a_request():
    from app.policy import loader
    from app.policy.sets import PolicySet
    # each file alone is well under the budget; together they exceed it
    one = "x: [" + ",".join(["1"] * 300) + "]\n"
    ps = PolicySet({f"policies/p{i}.yaml": one for i in range(5)}, loader.Budget(nodes=1000, seconds=60))
    assert ps.budget_exhausted
    assert [e.validator for e in ps.load_errors] == ["size"]
    assert "YAML nodes in the policy set" in ps.load_errors[0].message
    assert loader.load(one, "policies/one.yaml")[2] == []


def test_policy_endpoints_are_rate_limited_per_key(app, http, server, monkeypatch):
    from app.platform import ratelimit
    from tests.conftest import Http
    monkeypatch.setitem(app.config, "RATE_LIMIT_BURST", 3)
    monkeypatch.setitem(app.config, "RATE_LIMIT_PER_MINUTE", 6)
    ratelimit.reset()
    mine, other = Http(server, make_token(["policy:read"])), Http(server, make_token(["policy:read"]))
    codes = [mine.post("/v1/policies/validate", json={"files": {"policies/x.yaml": "a: 1\n"}}).status_code
             for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    r = mine.post("/v1/policies/validate", json={})
    assert r.status_code == 429 and r.json()["code"] == "rate-limited" and int(r.headers["Retry-After"]) >= 1
    # another key has its own bucket; cheap endpoints are not limited
    assert other.post("/v1/policies/validate", json={"files": {"policies/x.yaml": "a: 1\n"}}).status_code == 200
    assert mine.get("/v1/policies/active").status_code == 200
