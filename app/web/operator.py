"""Operator pages: the active policy set and its history, check results (file:line:col), the semantic diff of two
versions, explaining a decision, applying a set after a confirmation showing its diff and validation result, and
simulation reports. The same policy functions and permissions as the policy and simulation APIs.
"""
import json

from flask import Response, current_app, g, request

from app import engine, policy
from app.errors import Problem, not_found, validation_failed
from app.platform import auth, ratelimit
from app.policy import store
from app.policy.diff import diff as policy_diff, render as render_diff
from app.services.simulation import report as sim_report, runs as sim_runs
from app.web.base import blueprint, form_text, page, render

bp = blueprint("web_policy", "/web")

DISK = "disk"  # the configured folders (policies/ and rules/), as the API's apply with an empty body


def _limit():
    """The API's rate limit of expensive policy calls, per signed-in person."""
    ratelimit.take("web_policy", f"staff:{g.staff_no}", current_app.config["RATE_LIMIT_PER_MINUTE"],
                   current_app.config["RATE_LIMIT_BURST"])


def _disk():
    return policy.read_dirs(current_app.config["POLICY_DIR"], current_app.config["RULES_DIR"])


def _files_of(version):
    if version == DISK:
        return _disk()
    if version == "active":
        return dict(policy.active().files)
    files = store.files_of(version) if version and len(version) == 16 else None
    if files is None:
        raise not_found("policy version", version)
    return files


def _candidate():
    """The set the form describes: the configured folders, or the active set with one file's text replaced."""
    if form_text("source") == DISK:
        return _disk(), None
    name = form_text("file")
    files = dict(policy.active().files)
    if name not in files:
        raise validation_failed([{"pointer": "/file", "validator": "enum", "message": f"不是当前策略集中的文件：{name}"}])
    text = (request.form.get("text") or "").replace("\r\n", "\n")
    files[name] = text
    return files, name


@bp.get("/policies")
@page(scope="policy:read")
def policies():
    ps = policy.active()
    from app.models.policy import PolicyActive
    row = PolicyActive.get_or_none(PolicyActive.id == 1) if store.tables_ready() else None
    return render("policies.html", version=ps.version, row=row,
                  kinds={k: [d["_file"] for d in ps.get(k)] for k in ps.kinds()},
                  files=sorted(ps.files), history=store.history(30)[0], versions=store.versions(30)[0],
                  rulesets=sorted(d["name"] for d in ps.get("ruleset") if isinstance(d.get("name"), str)))


@bp.post("/policies/check")
@page(scope="policy:read", audit=False)
def check():
    _limit()
    files, _ = _candidate()
    ps, errors = policy.check(files)
    return render("_policy_check.html", version=ps.version, errors=[e.to_dict() for e in errors], nfiles=len(files))


@bp.get("/policies/diff")
@page(scope="policy:read")
def diff():
    a, b = request.args.get("a") or "active", request.args.get("b") or DISK
    changes = policy_diff(_files_of(a), _files_of(b))
    return render("policy_diff.html", a=a, b=b, changes=changes, lines=render_diff(changes),
                  versions=store.versions(30)[0])


@bp.get("/policies/edit")
@page(scope="policy:read")
def edit():
    name = request.args.get("file") or ""
    files = policy.active().files
    if name not in files:
        raise not_found("policy file", name)
    return render("policy_edit.html", name=name, text=files[name], version=policy.active_version())


@bp.post("/policies/preview")
@page(scope="policy:read", audit=False)
def preview():
    """The confirmation: validation result and semantic diff against the active set; apply only when valid."""
    _limit()
    files, name = _candidate()
    ps, errors = policy.check(files)
    changes = policy_diff(dict(policy.active().files), files)
    return render("_policy_preview.html", version=ps.version, errors=[e.to_dict() for e in errors],
                  lines=render_diff(changes), changes=changes, name=name, text=files.get(name) if name else None,
                  source=form_text("source"), active=policy.active_version())


@bp.post("/policies/apply")
@page(scope="policy:write", permission="policy.apply")
def apply():
    from app.platform import audit
    _limit()
    audit.suppress()  # policy.apply records its own row when the active set changes, and none otherwise
    files, _ = _candidate()
    expected = form_text("expected_version")
    res = policy.apply(files, auth.actor(g.principal), note=form_text("note") or None)
    if expected and res.version != expected:  # cannot happen for the same files: the version is their hash
        raise Problem(409, "conflict", "Conflict", "策略内容与确认时不一致")
    resp = render("_flash.html", kind="ok", title="策略已发布" if res.changed else "策略未变化",
                  detail=f"当前版本 {res.version}（之前 {res.previous}）", code="policy-applied")
    resp.headers["HX-Trigger"] = "policy-applied"
    return resp


@bp.post("/policies/explain")
@page(scope="policy:read", audit=False)
def explain():
    ruleset = form_text("ruleset")
    try:
        facts = json.loads(request.form.get("facts") or "{}")
    except ValueError as exc:
        raise validation_failed([{"pointer": "/facts", "validator": "type", "message": f"不是合法的 JSON：{exc}"}]) \
            from None
    if not isinstance(facts, dict):
        raise validation_failed([{"pointer": "/facts", "validator": "type", "message": "需要一个 JSON 对象"}])
    version = form_text("version")
    ps = policy.active() if not version or version == policy.active_version() else policy.PolicySet(_files_of(version))
    out = engine.explain(ruleset, facts, policy_set=ps)
    return render("_policy_explain.html", out=out, pretty=json.dumps(out, ensure_ascii=False, indent=2, default=str))


# --- simulation reports -------------------------------------------------------------------------------

@bp.get("/simulations")
@page(scope="simulate:read")
def simulations():
    return render("simulations.html", runs=sim_runs.listing(50))


@bp.get("/simulations/<run_id>")
@page(scope="simulate:read")
def simulation(run_id):
    run = sim_runs.get(run_id)
    rows = sim_report.metric_rows(run["result"]) if run["result"] else []
    return render("simulation.html", run=run, rows=rows)


@bp.get("/simulations/<run_id>/report")
@page(scope="simulate:read")
def simulation_report(run_id):
    run = sim_runs.get(run_id)
    if run["result"] is None:
        raise Problem(409, "simulation-not-finished", "Simulation not finished", f"模拟 {run_id} 尚未完成")
    return Response(sim_report.to_html(run["result"]), mimetype="text/html; charset=utf-8")
