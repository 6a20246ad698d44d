"""Audit log HTTP API: filters, cursor pagination, CSV export."""
import datetime as dt

from flask import Blueprint, Response, jsonify, request

from app.api import operation, page_query, q, query_int
from app.errors import Problem, validation_failed
from app.platform import audit

bp = Blueprint("audit", __name__, url_prefix="/v1")

QUERY = {"action": "exact, or a prefix ending in * (ticket.*)", "actor": "e.g. staff:S-cs-1",
         "staff_no": "the person", "subject": "e.g. ticket:42", "request_id": "X-Request-Id",
         "credential": "session:<id> or api_key:<id>", "from": "ISO date-time (inclusive)",
         "to": "ISO date-time (exclusive)", **page_query(maximum=1000, default=100),
         "format": q("json | csv", enum=["json", "csv"])}


def _instant(name):
    raw = request.args.get(name)
    if not raw:
        return None
    try:
        value = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise validation_failed([{"pointer": f"/query/{name}", "validator": "format",
                                  "message": "expected an ISO 8601 date or date-time"}]) from None
    if value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return value


@bp.get("/audit")
@operation("The audit log, newest first: every state change with actor, request id, policy version and a "
           "before/after summary (JSON, or CSV in UTF-8 with BOM)", scope="admin", tags=["audit"],
           query=QUERY, permission="audit.read", allow_service=True, content={"text/csv": "format=csv: UTF-8 CSV with a BOM"},
           response="api/audit/audit_page.json")
def search():
    fmt = request.args.get("format", "json")
    if fmt not in ("json", "csv"):
        raise validation_failed([{"pointer": "/query/format", "validator": "enum", "message": "json or csv"}])
    filters = {}
    for name in audit.FILTERS:
        value = request.args.get(name)
        if value:
            if len(value) > 200 or "\x00" in value:
                raise validation_failed([{"pointer": f"/query/{name}", "validator": "maxLength",
                                          "message": "at most 200 characters, no NUL"}])
            filters[name] = value
    start, end = _instant("from"), _instant("to")
    if start and end and start >= end:
        raise Problem(422, "invalid-window", "Invalid window", "'from' must be before 'to'")
    page = audit.search(filters, start, end, cursor=query_int("cursor", None, minimum=1),
                        limit=query_int("limit", 100, 1, 1000))
    if fmt == "csv":
        return Response(audit.to_csv(page["items"]), mimetype="text/csv", content_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": "attachment; filename=audit.csv",
                                 **({"X-Next-Cursor": page["next_cursor"]} if page["next_cursor"] else {})})
    return jsonify(page)
