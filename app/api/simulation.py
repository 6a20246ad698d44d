"""Simulation API: start a simulation (a job), read its status/progress/report, period-end preview, shadow evaluation."""
from flask import Blueprint, Response, g, jsonify, request

from app.api import operation, page, page_args, page_query, q, query_int
from app.errors import Problem
from app.platform import auth
from app.services.simulation import preview, runs, shadow

bp = Blueprint("simulation", __name__, url_prefix="/v1")
TAGS = ["simulation"]


@bp.post("/simulations")
@operation("Start a simulation: replay a history against a candidate policy set (runs as a job)",
           scope="simulate:write", body="api/simulation/run.json", tags=TAGS, status=202, idempotent="replay",
           response="api/simulation/run_status.json")
def post_simulation():
    run = runs.create(g.body, auth.actor(g.principal))
    return jsonify(run), 202, {"Location": f"/v1/simulations/{run['id']}"}


@bp.get("/simulations/<run_id>")
@operation("A simulation's status, progress and (when finished) its report", scope="simulate:read", tags=TAGS,
           query={"format": "json (default), csv, text or html (the report only, when finished)"},
           response="api/simulation/run_status.json",
           content={"text/csv": "format=csv: the report's metrics (baseline, candidate, diff)",
                    "text/plain": "format=text: the report as a terminal table",
                    "text/html": "format=html: the report as a self-contained page"},
           problems={409: "simulation-not-finished: a report format asked before the run finished"})
def get_simulation(run_id):
    run = runs.get(run_id)
    fmt = request.args.get("format", "json")
    if fmt == "json":
        return jsonify(run)
    if fmt not in ("csv", "text", "html"):
        raise Problem(422, "validation-failed", "Validation failed", "format is json, csv, text or html",
                      errors=[{"pointer": "/query/format", "validator": "enum", "message": "json, csv, text or html"}])
    if run["result"] is None:
        raise Problem(409, "simulation-not-finished", "Simulation not finished",
                      f"simulation {run_id} is {run['status']}; its report is not ready")
    from app.services.simulation import report
    render = {"csv": (report.to_csv, "text/csv"), "text": (report.to_text, "text/plain; charset=utf-8"),
              "html": (report.to_html, "text/html; charset=utf-8")}[fmt]
    return Response(render[0](run["result"]), mimetype=render[1])


@bp.get("/simulations/period-end-preview")
@operation("What the next deduction/expiry does to every member under the active policy (a page of members "
           "by member id; each row names the instant and policy version it was computed at)", scope="simulate:read",
           tags=TAGS, query={"at": "RFC 3339 instant (default: the next deduction date)",
                             **page_query("string", maximum=1000, default=100),
                             "format": q("json (default) or csv (every member, for notices)", enum=["json", "csv"])},
           content={"text/csv": "format=csv: UTF-8 CSV with a BOM"}, response="api/simulation/preview_page.json")
def get_preview():
    fmt = request.args.get("format", "json")
    if fmt == "csv":
        result = preview.period_end(request.args.get("at"))
        return Response(preview.to_csv(result), mimetype="text/csv",
                        headers={"Content-Disposition": "attachment; filename=period-end-preview.csv"})
    if fmt != "json":
        raise Problem(422, "validation-failed", "Validation failed", "format is json or csv",
                      errors=[{"pointer": "/query/format", "validator": "enum", "message": "json or csv"}])
    result = preview.period_end(request.args.get("at"), *page_args())
    return page([dict(item, at=result["at"], policy_version=result["policy_version"]) for item in result["items"]],
                result["next_cursor"])


@bp.post("/simulations/shadow")
@operation("Shadow a candidate policy set on live member events (no effects)", scope="simulate:write",
           body="api/simulation/shadow.json", tags=TAGS, status=201, idempotent="replay",
           response="api/simulation/shadow_set.json")
def post_shadow():
    return jsonify(shadow.start(g.body["candidate"], auth.actor(g.principal))), 201


@bp.delete("/simulations/shadow")
@operation("Stop the running shadow evaluation", scope="simulate:write", tags=TAGS, idempotent="replay",
           problems={404: "no-shadow: no candidate set is being shadowed"}, response="api/simulation/shadow_set.json")
def delete_shadow():
    return jsonify(shadow.stop())


@bp.get("/simulations/shadow")
@operation("Differences the shadowed candidate set would have made (which rule, members, how much)",
           scope="simulate:read", tags=TAGS, query={"id": "shadow id (default: the latest)"},
           problems={404: "no-shadow: no shadow evaluation exists"}, response="api/simulation/shadow_report.json")
def get_shadow():
    return jsonify(shadow.report(query_int("id", 0, 0) or None))
