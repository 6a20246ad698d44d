"""Knowledge HTTP API: editors write versions, reviewers publish, agents search, get suggestions and count uses."""
from flask import Blueprint, g, jsonify, request

from app.api import PAGE, operation, page, page_args, query_int
from app.api import q as q_
from app.errors import validation_failed
from app.services.knowledge import entries

bp = Blueprint("knowledge", __name__, url_prefix="/v1/knowledge")

TAGS = ["knowledge"]
EDIT = {"scope": "service:write", "permission": "knowledge.edit"}
PUBLISH = {"scope": "service:write", "permission": "knowledge.publish"}


def _query_text(name, required=False, max_len=500):
    raw = request.args.get(name)
    if raw is None or raw == "":
        if required:
            raise validation_failed([{"pointer": f"/query/{name}", "validator": "required",
                                      "message": f"{name} is required"}])
        return None
    if len(raw) > max_len or "\x00" in raw:
        raise validation_failed([{"pointer": f"/query/{name}", "validator": "maxLength",
                                  "message": f"at most {max_len} characters, no NUL"}])
    return raw


@bp.post("/entries")
@operation("Write a new entry (a draft: version 1)", **EDIT, body="api/knowledge/entry.json", tags=TAGS, status=201, idempotent="replay",
           response="api/knowledge/entry_view.json")
def create_entry():
    entry_id = entries.create(g.staff_no, g.body)
    resp = jsonify(entries.view(entry_id))
    resp.status_code = 201
    return resp


@bp.get("/entries")
@operation("Entries (editors' list, oldest first; filter by state and category)", scope="service:read", tags=TAGS,
           query={"state": "draft | in_review | published | rejected", "category": "category", **PAGE},
           response="api/knowledge/entries_page.json")
def list_entries():
    cursor, limit = page_args()
    return page(*entries.listing(_query_text("state", max_len=16), _query_text("category", max_len=64),
                                 limit, cursor))


@bp.get("/entries/<int:entry_id>")
@operation("An entry: latest version and the published one", scope="service:read", tags=TAGS,
           response="api/knowledge/entry_view.json")
def get_entry(entry_id):
    return jsonify(entries.view(entry_id))


@bp.put("/entries/<int:entry_id>")
@operation("A new version of an entry (draft; the published one is served until the new one is reviewed)", **EDIT,
           body="api/knowledge/revision.json", tags=TAGS,
           response="api/knowledge/entry_view.json")
def revise_entry(entry_id):
    return jsonify(entries.revise(entry_id, g.staff_no, g.body))


@bp.post("/entries/<int:entry_id>/submit")
@operation("Ask for review of the latest version", **EDIT, tags=TAGS, idempotent="replay",
           response="api/knowledge/entry_view.json")
def submit_entry(entry_id):
    return jsonify(entries.submit(entry_id, g.staff_no))


@bp.post("/entries/<int:entry_id>/publish")
@operation("Publish the version in review (by someone other than its author)", **PUBLISH,
           body="api/knowledge/review.json", tags=TAGS, idempotent="replay",
           response="api/knowledge/entry_view.json")
def publish_entry(entry_id):
    return jsonify(entries.review(entry_id, g.staff_no, True, g.body.get("note"), g.body.get("version")))


@bp.post("/entries/<int:entry_id>/reject")
@operation("Send the version in review back to its author", **PUBLISH, body="api/knowledge/review.json", tags=TAGS, idempotent="replay",
           response="api/knowledge/entry_view.json")
def reject_entry(entry_id):
    return jsonify(entries.review(entry_id, g.staff_no, False, g.body.get("note"), g.body.get("version")))


@bp.get("/entries/<int:entry_id>/versions")
@operation("Every version: who wrote and reviewed it, when", scope="service:read", tags=TAGS,
           response="api/knowledge/version_list.json")
def entry_versions(entry_id):
    return jsonify(entries.versions(entry_id))


@bp.get("/entries/<int:entry_id>/versions/<int:number>")
@operation("One version", scope="service:read", tags=TAGS,
           response="api/knowledge/version_view.json")
def entry_version(entry_id, number):
    return jsonify(entries.version(entry_id, number))


@bp.post("/entries/<int:entry_id>/versions/<int:number>/restore")
@operation("Restore an old version as a new draft (reviewed again before it is published)", **EDIT,
           body="api/knowledge/review.json", tags=TAGS, idempotent="replay",
           response="api/knowledge/entry_view.json")
def restore_version(entry_id, number):
    return jsonify(entries.restore(entry_id, number, g.staff_no, g.body.get("note", "")))


@bp.post("/entries/<int:entry_id>/use")
@operation("Count a use of an entry (the agent sent it)", scope="service:write", permission="service.serve",
           body="api/knowledge/use.json", tags=TAGS, idempotent="replay",
           response="api/knowledge/entry_view.json")
def use_entry(entry_id):
    return jsonify(entries.use(entry_id, g.staff_no, g.body.get("conversation_id")))


@bp.get("/search")
@operation("Search the published knowledge (Chinese tokenised with jieba, BM25 ranking)", scope="service:read",
           tags=TAGS, query={"q": "the question", "category": "only this category", "tag": "only with this tag",
                             "limit": q_("hits", "integer", minimum=1, maximum=50, default=10)},
           response="api/knowledge/search_result.json")
def search():
    q = _query_text("q", required=True)
    return jsonify({"query": q, "items": entries.search(q, query_int("limit", 10, 1, 50),
                                                        _query_text("category", max_len=64),
                                                        _query_text("tag", max_len=32))})


@bp.get("/suggestions")
@operation("Entries for the agent from a conversation's last user message", scope="service:read",
           permission="service.serve", tags=TAGS,
           query={"conversation_id": q_("the conversation", "integer", required=True, minimum=1,
                                        maximum=2**63 - 1),
                  "limit": q_("hits", "integer", minimum=1, maximum=20, default=5)},
           response="api/knowledge/suggestions.json")
def suggestions():
    conv = query_int("conversation_id", None, 1)
    if conv is None:
        raise validation_failed([{"pointer": "/query/conversation_id", "validator": "required",
                                  "message": "conversation_id is required"}])
    return jsonify(entries.suggest(conv, query_int("limit", 5, 1, 20)))
