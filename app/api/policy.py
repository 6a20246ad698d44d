"""Policy API: validate, apply, active set, versions, decision explanations and the decision log."""
from flask import Blueprint, g, jsonify, request

from app.platform.timefmt import iso
from app import policy
from app.api import operation, query_int
from app.errors import Problem, not_found
from app.platform.auth import actor

bp = Blueprint("policy", __name__, url_prefix="/v1")


@bp.post("/policies/validate")
@operation("Validate a policy set (``files``, or the configured folders when the body is {}); runs examples",
           scope="policy:read", body="api/policy/validate.json", tags=["policy"], audit=False, rate_limited=True)
def validate():
    files = g.body.get("files")
    ps, errors = policy.check(files if files is not None else _configured())
    return jsonify(valid=not errors, version=ps.version, files=len(ps.files),
                   errors=[e.to_dict() for e in errors])


def _configured():
    from flask import current_app
    return policy.read_dirs(current_app.config["POLICY_DIR"], current_app.config["RULES_DIR"])


@bp.post("/policies/apply")
@operation("Validate and activate a policy set atomically (``files``, or the configured folders when the "
           "body is {}); a bad set changes nothing", scope="policy:write", body="api/policy/apply.json",
           tags=["policy"], permission="policy.apply", allow_service=True, rate_limited=True)
def apply():
    from app.platform import audit
    audit.suppress()  # policy.apply records its own row when the active set changes, and none otherwise
    files = g.body.get("files")
    res = policy.apply(files if files is not None else _configured(), actor(g.principal), note=g.body.get("note"))
    return jsonify(version=res.version, previous=res.previous, changed=res.changed)


def _active_row():
    from app.policy import store
    from app.models.policy import PolicyActive
    row = PolicyActive.get_or_none(PolicyActive.id == 1) if store.tables_ready() else None
    return row


@bp.get("/policies/active")
@operation("The active policy set: version, files, kinds, rulesets", scope="policy:read", tags=["policy"],
           query={"files": "1 to include each file's text"})
def active():
    ps = policy.active()
    row = _active_row()
    out = {"version": ps.version,
           "activated_at": iso(row.activated_at) if row else None,
           "activated_by": row.activated_by if row else None,
           "kinds": {k: [d["_file"] for d in ps.get(k)] for k in ps.kinds()},
           "rulesets": sorted(d["name"] for d in ps.get("ruleset") if isinstance(d.get("name"), str)),
           "files": ps.files if request.args.get("files") == "1" else sorted(ps.files)}
    return jsonify(out)


@bp.get("/policies/versions")
@operation("History of activations (newest first) and stored versions", scope="policy:read", tags=["policy"],
           query={"limit": "at most this many rows (default 100)"})
def versions():
    from app.policy import store
    limit = query_int("limit", 100, 1, 1000)
    return jsonify(active=policy.active_version(), history=store.history(limit), versions=store.versions(limit))


@bp.get("/policies/versions/<version>")
@operation("The files of one stored policy set version", scope="policy:read", tags=["policy"])
def version_files(version):
    from app.policy import store
    files = store.files_of(version) if len(version) == 16 else None
    if files is None:
        raise not_found("policy version", version)
    return jsonify(version=version, files=files)


@bp.post("/decisions/explain")
@operation("Which rule of a ruleset fires for these facts, and why (each condition's value and result)",
           scope="policy:read", body="api/policy/explain.json", tags=["policy"], audit=False)
def explain():
    from app import engine
    from app.policy import store
    ps = policy.active()
    wanted = g.body.get("version")
    if wanted and wanted != ps.version:
        files = store.files_of(wanted)
        if files is None:
            raise not_found("policy version", wanted)
        ps = policy.PolicySet(files)
    return jsonify(engine.explain(g.body["ruleset"], g.body["facts"], policy_set=ps))


@bp.get("/decisions")
@operation("Logged decisions about one subject (oldest first)", scope="policy:read", tags=["policy"],
           query={"subject": "e.g. ticket:T-1 or member:u1 (required)"})
def decisions_for():
    from app.policy import decisions
    subject = request.args.get("subject")
    if not subject or len(subject) > 200:
        raise Problem(422, "validation-failed", "Validation failed", "query parameter subject is required",
                      errors=[{"pointer": "/query/subject", "message": "required, 1-200 characters",
                               "validator": "required"}])
    return jsonify(subject=subject, decisions=decisions.for_subject(subject))

