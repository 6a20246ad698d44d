"""Exactly-once for retried calls: same key + same body -> the stored answer (result or refusal); other body -> 409.

The one implementation of the contract, used by every keyed operation (ledger operations and batches,
ticket create/transition/approve, plan subscriptions) and, for its replay rule, by member events.

What is stored under a key is the *decision*: a success, or a business refusal (insufficient funds,
cap exceeded, hold not held, transition not allowed ...: a 409 or 422 Problem whose code is not in
``UNSTORED``). A late retry of a declined request therefore gets the same refusal even after the
facts changed (a recharge), as its caller already treated it as final. Not stored, so a retry runs
again: schema/validation errors (nothing was decided), 404s (what the request names may exist
later), in-flight conflicts and every 5xx (nothing happened).
"""
import hashlib
import json

import peewee as pw

from app.db import db, transactional
from app.errors import Problem
from app.platform import audit, clock, sql

# Problem codes never stored under a key: the request was not decided, so a retry runs again.
UNSTORED = frozenset({"validation-failed", "idempotency-key-reused", "idempotency-key-required",
                      "unknown-operation", "batch-too-large"})
STORED_STATUSES = frozenset({402, 403, 409, 410, 422})


def digest(operation, body):
    """The request's fingerprint: operation name and canonical JSON body."""
    canonical = json.dumps({"op": operation, "body": body}, sort_keys=True, separators=(",", ":"),
                           ensure_ascii=False)
    # surrogatepass: a body with a lone surrogate is refused by the view (422), not by its fingerprint (500)
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def storable(problem):
    """True for a business refusal that is stored and replayed under its key (see module doc)."""
    return problem.status in STORED_STATUSES and problem.code not in UNSTORED and not getattr(
        problem, "unstored", False)


def reused():
    return Problem(409, "idempotency-key-reused", "Idempotency key reused",
                   "This Idempotency-Key was used with a different request body or operation.")


def replay(stored_digest, request_digest, status, response, conflict=reused):
    """The stored answer as ``(status, result, True)``; a stored refusal is raised again (``replayed``).

    Args:
        stored_digest, request_digest: the stored and the retried request's digests.
        status: stored HTTP status; response: stored JSON text (or already decoded value).
        conflict: factory of the Problem raised when the digests differ.
    """
    if stored_digest != request_digest:
        raise conflict()
    body = json.loads(response) if isinstance(response, str) else response
    if status >= 400:
        raise refusal(body)
    return status, body, True


def refusal(body):
    """A stored problem body as a raisable Problem marked ``replayed``."""
    extra = {k: v for k, v in body.items() if k not in ("type", "title", "status", "code", "detail")}
    exc = Problem(body["status"], body["code"], body["title"], body.get("detail"), **extra)
    exc.replayed = True
    return exc


# Statement text is built once per engine: peewee's query building costs more CPU on this hot path
# than the round trip itself.
_SQL = {}


def _sql():
    key = type(db.obj)
    sql = _SQL.get(key)
    if sql is None:
        p = db.obj.param
        sql = _SQL[key] = (
            f'SELECT request_digest, status_code, response FROM idempotency_record WHERE client = {p} AND "key" = {p}',
            'INSERT INTO idempotency_record (client, "key", operation, request_digest, status_code, response, '
            f"created_at) VALUES ({', '.join([p] * 7)})")
    return sql


def lookup(client, key, request_digest):
    """The stored answer of (client, key) (see ``replay``), or None."""
    row = db.execute_sql(_sql()[0], (client, key)).fetchone()
    return None if row is None else replay(row[0], request_digest, row[1], row[2])


def _save(client, key, operation, request_digest, status, result):
    response = json.dumps(result, separators=(",", ":"), ensure_ascii=False, default=str)
    sql.statement(_sql()[1], (client, key, operation, request_digest, status, response, clock.now()))


def run(client, key, operation, body, fn, status_code=200, prepare=None, request_digest=None, audit_row=False):
    """Run ``fn`` once per (client, key), in one transaction with the record of its answer.

    Outside a transaction the call is optimistic: no lookup first. The record's unique (client, key)
    (or any unique key the operation writes, e.g. a ledger journal's) makes a retry's transaction
    fail; it rolls back and the stored answer is replayed. Inside a caller's transaction (a batch,
    another context's operation) the record is looked up first and written in that transaction, so
    it stands or falls with the caller's commit (a caller's savepoint rollback forgets a refusal too).

    Args:
        client: the caller's identity (API key id); keys are unique per client.
        key: the Idempotency-Key (None -> no idempotency, just run in a transaction).
        operation: name of the operation (part of the digest).
        body: the request body (part of the digest).
        fn: callable returning a JSON-serialisable result; runs inside the transaction. With
            ``prepare``, it is called with prepare's value.
        status_code: the status of a first success.
        prepare: optional callable run before the write transaction (e.g. rules that must not hold
            SQLite's write lock); its Problems count as the operation's.
        request_digest: ``digest(operation, body)`` when the caller has it already.
        audit_row: write the request's audit row (``audit.request_row``) in the operation's transaction
            instead of a second transaction after the response (only when this call owns the transaction).

    Returns:
        (status_code, result, replayed).

    Raises:
        Problem: the operation's own (a stored refusal replays with ``replayed = True``), or 409
            idempotency-key-reused when the key was used with another body.
    """
    request_digest = request_digest or digest(operation, body)
    prepared = {}

    def call():
        return fn() if prepare is None else fn(prepared["value"])

    audited_before = audit.request_audited() if audit_row else None

    def call_audited(save=False):
        if audit_row:
            audit.set_request_audited(audited_before)  # a retried transaction wrote (and lost) the row: again
        result = call()
        # the request's audit row and the idempotency record go to the database together (sql.deferred:
        # one statement on PostgreSQL); nothing reads them back in this transaction
        with sql.deferred():
            if audit_row:
                audit.request_row(status_code, result)
            if save:
                _save(client, key, operation, request_digest, status_code, result)
        return result

    def get_ready():
        if prepare is not None:
            prepared["value"] = prepare()

    if key is None:
        get_ready()
        return status_code, transactional()(call_audited)(), False
    if db.in_transaction():
        return _run_inside(client, key, operation, request_digest, call, status_code, get_ready)

    try:
        get_ready()
        return status_code, transactional()(call_audited)(save=True), False
    except pw.IntegrityError:
        # This key (or a unique key the operation writes) was committed first, by an earlier call or
        # a concurrent twin: ours rolled back. Replay what was stored.
        hit = lookup(client, key, request_digest)
        if hit:
            return hit
        raise
    except Problem as exc:
        if getattr(exc, "replayed", False):
            raise
        if storable(exc):
            try:
                transactional()(_save)(client, key, operation, request_digest, exc.status, exc.to_dict())
            except pw.IntegrityError:
                pass  # an answer is already stored under this key: that one stands
            else:
                raise
        # Not stored (or stored earlier): an earlier answer under this key wins over this run's.
        hit = lookup(client, key, request_digest)
        if hit:
            return hit
        raise


def _run_inside(client, key, operation, request_digest, call, status_code, get_ready):
    hit = lookup(client, key, request_digest)
    if hit:
        return hit
    try:
        get_ready()
        result = call()
    except Problem as exc:
        if storable(exc) and not getattr(exc, "replayed", False):
            _save(client, key, operation, request_digest, exc.status, exc.to_dict())
        raise
    _save(client, key, operation, request_digest, status_code, result)
    return status_code, result, False
