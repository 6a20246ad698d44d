"""Policy API: validate, apply, active set, versions, decision explanations and the decision log."""
from flask import Blueprint, g, jsonify, request

from app.platform.timefmt import iso
from app import policy
from app.api import operation, page, page_args, page_query, q
from app.errors import Problem, not_found
from app.platform.auth import actor

bp = Blueprint("policy", __name__, url_prefix="/v1")


@bp.post("/policies/validate")
@operation("Validate a policy set (``files``, or the configured folders when the body is {}); runs examples",
           scope="policy:read", body="api/policy/validate.json", tags=["policy"], readonly=True, rate_limited=True,
           response="api/policy/validation.json")
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
           tags=["policy"], idempotent="replay", permission="policy.apply", allow_service=True,
           rate_limited=True,
           problems={422: "policy-invalid: every error with file, line, column and a pointer",
                     412: "precondition-failed: If-Match names another version than the active one"},
           response="api/policy/applied.json")
def apply():
    from app.platform import audit
    audit.suppress()  # policy.apply records its own row when the active set changes, and none otherwise
    files = g.body.get("files")
    res = policy.apply(files if files is not None else _configured(), actor(g.principal), note=g.body.get("note"),
                       if_match=_if_match())
    resp = jsonify(version=res.version, previous=res.previous, changed=res.changed)
    resp.set_etag(res.version)
    return resp


def _if_match():
    """The version named by an ``If-Match`` header (``"<version>"``), or None when absent or ``*``."""
    header = request.headers.get("If-Match")
    if not header or header.strip() == "*":
        return None
    return header.strip().removeprefix("W/").strip('"')


def _active_row():
    from app.policy import store
    from app.models.policy import PolicyActive
    row = PolicyActive.get_or_none(PolicyActive.id == 1) if store.tables_ready() else None
    return row


@bp.get("/policies/active")
@operation("The active policy set: version, files, kinds, rulesets", scope="policy:read", tags=["policy"],
           query={"files": q("1 to include each file's text", enum=["0", "1"])},
           response="api/policy/active.json")
def active():
    ps = policy.active()
    row = _active_row()
    out = {"version": ps.version,
           "activated_at": iso(row.activated_at) if row else None,
           "activated_by": row.activated_by if row else None,
           "kinds": {k: [d["_file"] for d in ps.get(k)] for k in ps.kinds()},
           "rulesets": sorted(d["name"] for d in ps.get("ruleset") if isinstance(d.get("name"), str)),
           "files": ps.files if request.args.get("files") == "1" else sorted(ps.files)}
    resp = jsonify(out)
    resp.set_etag(ps.version)  # send it back as If-Match on apply: 412 if someone applied in between
    return resp


@bp.get("/policies/versions")
@operation("Stored policy set versions, newest first (the active one: GET /v1/policies/active)",
           scope="policy:read", tags=["policy"], query=page_query("string", maximum=1000, default=100),
           response="api/policy/versions_page.json")
def versions():
    from app.policy import store
    cursor, limit = page_args()
    return page(*store.versions(limit, cursor))


@bp.get("/policies/activations")
@operation("History of activations, newest first (who applied which version, when, over which)",
           scope="policy:read", tags=["policy"], query=page_query(maximum=1000, default=100),
           response="api/policy/activations_page.json")
def activations():
    from app.policy import store
    cursor, limit = page_args()
    return page(*store.history(limit, cursor))


@bp.get("/policies/versions/<version>")
@operation("The files of one stored policy set version", scope="policy:read", tags=["policy"],
           response="api/policy/version_files.json")
def version_files(version):
    from app.policy import store
    files = store.files_of(version) if len(version) == 16 else None
    if files is None:
        raise not_found("policy version", version)
    return jsonify(version=version, files=files)


@bp.post("/decisions/explain")
@operation("Which rule of a ruleset fires for these facts, and why (each condition's value and result)",
           scope="policy:read", body="api/policy/explain.json", tags=["policy"], readonly=True,
           problems={404: "unknown-ruleset, or no stored policy version", 422: "invalid-facts, validation-failed"},
           response="api/policy/explanation.json")
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
@operation("Logged decisions about one subject (oldest first), a page at a time", scope="policy:read",
           tags=["policy"], response="api/policy/decisions_page.json",
           query={"subject": q("e.g. ticket:T-1 or member:u1", required=True, minLength=1),
                  **page_query("string")})
def decisions_for():
    from app.policy import decisions
    subject = request.args.get("subject")
    if not subject or len(subject) > 200:
        raise Problem(422, "validation-failed", "Validation failed", "query parameter subject is required",
                      errors=[{"pointer": "/query/subject", "message": "required, 1-200 characters",
                               "validator": "required"}])
    return page(*decisions.page(subject, *page_args()))

