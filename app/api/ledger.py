"""Ledger HTTP API: thin wrappers over app.services.ledger (operations, batch, reads, reconciliation)."""
from flask import Blueprint, g, jsonify, request

from app.api import idempotency_key, operation, page_query, q, query_int
from app.errors import Problem, validation_failed
from app.platform import idempotency
from app.services import ledger
from app.platform.auth import actor

bp = Blueprint("ledger", __name__, url_prefix="/v1/ledger")

TAGS = ["ledger"]
LEDGER_PROBLEMS = {404: "customer-not-found, account-not-found, hold-not-found, journal-not-found",
                   409: "insufficient-funds (with needed/available/account), a state conflict, or "
                        "idempotency-key-reused",
                   422: "validation-failed, or a rule of the assets policy refuses the operation"}


def _respond(status, result, replayed):
    resp = jsonify(result)
    resp.status_code = status
    if replayed:
        resp.headers["Idempotent-Replayed"] = "true"
    return resp


def _client():
    return g.principal["id"]


def _arg(name):
    """A text query argument; NUL characters (which no database accepts) are a 422, not a 500."""
    value = request.args.get(name) or None
    if value is not None and ("\x00" in value or len(value) > 200):
        raise validation_failed([{"pointer": f"/query/{name}", "validator": "pattern",
                                  "message": "at most 200 characters, no NUL"}])
    return value


def _ref(ref):
    if "\x00" in ref or len(ref) > 200:
        raise Problem(404, "customer-not-found", "Customer not found", "no such customer")
    return ref


def _make_view(op):
    def view():
        status, result, replayed = ledger.execute(op, g.body, actor(g.principal), idempotency_key(),
                                                  client=_client(), validated=True, audit_row=True)
        return _respond(status, result, replayed)
    view.__name__ = f"op_{op}"
    view.__doc__ = f"Ledger operation {op}."
    summary = ledger.OPERATIONS[op].__doc__ or op
    from app.schemas import get_schema
    summary = get_schema(f"api/ledger/{op}.json").get("title", summary)
    permission = "ledger.freeze" if op in ledger.FREEZE_OPS else None
    wrapped = operation(summary, scope="ledger:write", body=f"api/ledger/{op}.json", idempotent=True,
                        tags=TAGS, status=ledger.status_of(op), problems=LEDGER_PROBLEMS,
                        response=f"api/ledger/results/{op}.json",
                        permission=permission, allow_service=bool(permission), audit=f"ledger.{op}")(view)
    bp.add_url_rule(f"/{op.replace('_', '-')}", endpoint=f"op_{op}", view_func=wrapped, methods=["POST"])


for _op in ledger.OPERATIONS:
    _make_view(_op)


@bp.post("/batch")
@operation("Up to 1,000 operations in one commit; per-item results (a failed item changes nothing)",
           scope="ledger:write", body="api/ledger/batch.json", idempotent=True, tags=TAGS, problems=LEDGER_PROBLEMS,
           response="api/ledger/results/batch.json")
def batch():
    key = idempotency_key()
    body = g.body
    status, result, replayed = idempotency.run(
        _client(), key, "ledger.batch", body,
        lambda: ledger.apply_batch(body["operations"], actor(g.principal), client=_client(), batch_key=key),
        audit_row=True)
    return _respond(status, result, replayed)


@bp.post("/customers")
@operation("Create a customer (idempotent) and open its accounts per the ledger policy",
           scope="ledger:write", body="api/ledger/customer.json", tags=TAGS, status=201, idempotent="replay",
           problems={409: "customer-kind-mismatch: the customer exists with another kind",
                     422: "unknown-customer-kind, reserved-customer"}, response="api/ledger/balances.json")
def create_customer():
    result = ledger.ensure_customer(g.body["external_ref"], g.body.get("kind", "user"))
    return jsonify(result), 201


@bp.post("/accounts")
@operation("Open another account of a type (merchants may hold several)", scope="ledger:write",
           body="api/ledger/account.json", tags=TAGS, status=201, problems=LEDGER_PROBLEMS, idempotent="replay",
           response="api/ledger/balances.json")
def open_account():
    result = ledger.open_account(g.body["customer"], g.body["account_type"], g.body["label"])
    return jsonify(result), 201


@bp.get("/customers/<ref>/balances")
@operation("Balances per account and sub-account (from snapshots)", scope="ledger:read", tags=TAGS,
           response="api/ledger/balances.json")
def balances(ref):
    return jsonify(ledger.balances(_ref(ref)))


@bp.get("/customers/<ref>/lots")
@operation("Open lots with expiry, earliest-expiring first", scope="ledger:read", tags=TAGS,
           query={"asset": "POINTS, RED_PACKET, VOUCHER...",
                  "all": q("1 to include spent/expired lots", enum=["0", "1"])}, response="api/ledger/lots.json")
def lots(ref):
    return jsonify(items=ledger.lots(_ref(ref), _arg("asset"),
                                     include_closed=request.args.get("all") == "1"))


@bp.get("/customers/<ref>/holds")
@operation("Holds (withdrawals, risk freezes)", scope="ledger:read", tags=TAGS,
           query={"state": q("hold state", enum=["held", "settled", "released", "expired"])},
           response="api/ledger/holds.json")
def holds(ref):
    return jsonify(items=ledger.holds(_ref(ref), _arg("state")))


@bp.get("/holds/<int:hold_id>")
@operation("One hold", scope="ledger:read", tags=TAGS, response="api/ledger/hold.json")
def hold(hold_id):
    return jsonify(ledger.hold(hold_id))


@bp.get("/journals/<int:journal_id>")
@operation("One journal with its entries", scope="ledger:read", tags=TAGS, response="api/ledger/journal.json")
def journal(journal_id):
    return jsonify(ledger.journal(journal_id))


@bp.get("/statement")
@operation("Statement (流水): entries newest first, cursor-paginated", scope="ledger:read", tags=TAGS,
           problems={404: "customer-not-found or account-not-found"},
           query={"customer": "customer external_ref", "account": q("account id", "integer", minimum=1, maximum=2**63 - 1), "type": "journal type",
                  "since": "ISO 8601, inclusive", "until": "ISO 8601, exclusive",
                  **page_query(maximum=500)}, response="api/ledger/statement.json")
def statement():
    return jsonify(ledger.statement(
        customer=_arg("customer"),
        account_id=query_int("account"),
        type=_arg("type"), since=_arg("since"), until=_arg("until"), cursor=_arg("cursor"),
        limit=query_int("limit")))


@bp.get("/reconcile")
@operation("Reconciliation report: every invariant, with drift listed", scope="ledger:read", tags=TAGS,
           problems={404: "customer-not-found"},
           query={"customer": "limit per-account checks to these customers (repeatable)"},
           response="api/ledger/reconciliation.json")
def reconcile():
    customers = request.args.getlist("customer") or None
    if customers and any("\x00" in c or len(c) > 200 for c in customers):
        raise validation_failed([{"pointer": "/query/customer", "validator": "pattern",
                                  "message": "at most 200 characters, no NUL"}])
    return jsonify(ledger.reconcile(customers=customers))
