"""Audit log: one append-only row per state change, naming the actor (person and/or credential), the request,
the policy version in force and a before/after summary.

One hook point: ``app.api.operation`` records every successful state-changing request (``from_response``,
or ``request_row`` inside the operation's own transaction where the operation asks for it); services record
explicitly (``record``) where they know a before/after summary, inside the transaction of
the change, and the hook then adds nothing for that request.
"""
import json

from flask import g as _flask_g, has_request_context, request as _flask_request

from app.models.core import AuditLog
from app.platform import auth, clock, export, paging, sql
from app.platform.timefmt import iso

MAX_SUMMARY_TEXT = 200
# never copied from a response into the log (a webhook's signing secret, a generated password, tokens)
SECRET_KEYS = frozenset({"secret", "password", "token", "csrf_token"})


def _dumps(value):
    return None if value is None else json.dumps(value, ensure_ascii=False, default=str, separators=(",", ":"))


def _request_context():
    return _flask_g if has_request_context() else None


def record(actor, action, subject=None, *, before=None, after=None, staff_no=None, credential=None,
           policy_version=None, **detail):
    """Append one audit row (call inside the transaction of the change it describes).

    Inside ``app.platform.sql.deferred()`` the row is written with the block's other writes, at its end.

    In a request, the request id, the acting person and credential (from ``g.principal``) and the active
    policy version are filled in, and the request's automatic row is suppressed.

    Args:
        actor: who acts, as ``auth.actor`` renders it (``staff:S-1``, ``api_key:ab as staff:S-1``, ``cli:bob``).
        action: dotted name, e.g. ``ticket.transition``, ``auth.login_failed``.
        subject: what changed, e.g. ``ticket:42``, ``staff:S-cs-1``.
        before, after: small JSON-able summaries of the state before and after.
        detail: anything else worth keeping (JSON).
    """
    g = _request_context()
    request_id = None
    if g is not None:
        principal = g.get("principal")
        request_id = g.get("request_id")
        if principal:
            staff_no = staff_no or principal.get("staff_no")
            credential = credential or auth.credential(principal)
        g.audited = True
    if policy_version is None:
        from app import policy
        policy_version = policy.active_version()
    sql.insert_later(AuditLog, {"at": clock.now(), "actor": actor, "action": action, "subject": subject,
                                "detail": _dumps(detail) if detail else None, "request_id": request_id,
                                "staff_no": staff_no, "credential": credential, "policy_version": policy_version,
                                "before": _dumps(before), "after": _dumps(after)})


def request_audited():
    """Whether this request's row is written already (None outside a request)."""
    g = _request_context()
    return None if g is None else bool(g.get("audited"))


def set_request_audited(value):
    """Reset the flag (``request_audited``'s value) when the transaction that wrote the row rolled back."""
    g = _request_context()
    if g is not None and value is not None:
        g.audited = value


def suppress():
    """This request changed nothing worth a row (e.g. applying the policy set already active)."""
    g = _request_context()
    if g is not None:
        g.audited = True


def _summary(value):
    """The top-level scalars (and ids of nested objects) of a response body, bounded."""
    if not isinstance(value, dict):
        return None
    out = {}
    for k, v in list(value.items())[:40]:
        if k in SECRET_KEYS:
            continue
        if isinstance(v, str):
            out[k] = v[:MAX_SUMMARY_TEXT]
        elif isinstance(v, (int, float, bool)) or v is None:
            out[k] = v
        elif isinstance(v, dict) and "id" in v and isinstance(v["id"], (int, str)):
            out[k] = {"id": v["id"]}
    return out


def _noun(arg):
    return arg[:-3] if arg.endswith(("_id", "_no")) else arg


def from_response(action, view_args, response):
    """The request hook: one row for a successful state-changing request nobody recorded explicitly."""
    g = _request_context()
    if g is None or g.get("audited") or response.status_code >= 400 \
            or response.headers.get("Idempotent-Replayed") == "true":
        return None
    from app.db import write_transaction
    body = response.get_json(silent=True) if response.mimetype == "application/json" else None
    with write_transaction():
        return _request_row(g, action, view_args, body, response.status_code)


_PLAIN = (str, int, float, bool, type(None), dict, list)


def request_row(status, result):
    """The request hook's row, written now by the operation itself inside its own transaction.

    The same row ``from_response`` would write after the response (same action, subject, summary and
    status), but in the operation's commit instead of a second transaction of its own. A no-op outside
    a request, for an already audited request or a result whose summary only the JSON response has
    (a top-level value that is not plain JSON).
    """
    g = _request_context()
    if g is None or g.get("audited") or status >= 400 or not g.get("audit_action") \
            or not isinstance(result, dict) or not all(isinstance(v, _PLAIN) for v in result.values()):
        return None
    return _request_row(g, g.audit_action, _flask_request.view_args, result, status)


def _request_row(g, action, view_args, body, status):
    subject = None
    if view_args:  # /tickets/<ticket_id>/comments -> ticket:42, like the explicit rows' subjects
        subject = ",".join(f"{_noun(k)}:{v}" for k, v in view_args.items())[:200]
    elif isinstance(body, dict) and isinstance(body.get("id"), (int, str)):
        subject = f"{action.split('.')[0]}:{body['id']}"
    return record(auth.actor(g.get("principal")), action, subject, after=_summary(body), status=status)


def to_dict(row):
    return {"id": row.id, "at": iso(row.at), "actor": row.actor, "staff_no": row.staff_no,
            "credential": row.credential, "action": row.action, "subject": row.subject,
            "request_id": row.request_id, "policy_version": row.policy_version,
            "before": json.loads(row.before) if row.before else None,
            "after": json.loads(row.after) if row.after else None,
            "detail": json.loads(row.detail) if row.detail else None}


FILTERS = ("action", "actor", "staff_no", "subject", "request_id", "credential")


def search(filters=None, start=None, end=None, cursor=None, limit=100):
    """Audit rows newest first.

    Args:
        filters: equality on FILTERS keys; ``action`` ending in ``*`` matches a prefix (``ticket.*``).
        start, end: naive UTC instants bounding ``at`` (start inclusive, end exclusive).
        cursor: the ``next_cursor`` of the previous page.
        limit: page size.

    Returns:
        {"items": [...], "next_cursor": str | None}.
    """
    q = AuditLog.select()
    for name, value in (filters or {}).items():
        if value is None:
            continue
        field = getattr(AuditLog, name)
        if name == "action" and value.endswith("*"):
            q = q.where(field.startswith(value[:-1]))
        else:
            q = q.where(field == value)
    if start is not None:
        q = q.where(AuditLog.at >= start)
    if end is not None:
        q = q.where(AuditLog.at < end)
    rows, nxt = paging.keyset(q, AuditLog.id, cursor, limit)
    return {"items": [to_dict(r) for r in rows], "next_cursor": None if nxt is None else str(nxt)}


CSV_COLUMNS = ("id", "at", "actor", "staff_no", "credential", "action", "subject", "request_id",
               "policy_version", "before", "after", "detail")


def to_csv(items):
    """CSV (UTF-8 with a byte order mark, so spreadsheet programs read the Chinese text right)."""
    return export.csv_text(CSV_COLUMNS, items)
