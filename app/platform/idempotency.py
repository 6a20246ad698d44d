"""Exactly-once for retried calls: same key + same body -> stored result; same key + other body -> 409."""
import hashlib
import json

import peewee as pw

from app.db import db, transactional
from app.errors import Problem
from app.models.core import IdempotencyRecord


def digest(operation, body):
    canonical = json.dumps({"op": operation, "body": body}, sort_keys=True, separators=(",", ":"),
                           ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _replay(record, request_digest):
    if record.request_digest != request_digest:
        raise Problem(409, "idempotency-key-reused", "Idempotency key reused",
                      "This Idempotency-Key was used with a different request body or operation.")
    return record.status_code, json.loads(record.response), True


def lookup(client, key, request_digest):
    rec = IdempotencyRecord.get_or_none((IdempotencyRecord.client == client) & (IdempotencyRecord.key == key))
    return None if rec is None else _replay(rec, request_digest)


def run(client, key, operation, body, fn, status_code=200):
    """Run ``fn()`` once per (client, key), in one transaction with the record of its result.

    Args:
        client: the caller's identity (API key id); keys are unique per client.
        key: the Idempotency-Key (None -> no idempotency, just run in a transaction).
        operation: name of the operation (part of the digest).
        body: the request body (part of the digest).
        fn: callable returning a JSON-serialisable result; runs inside the transaction.
        status_code: the status of a first success.

    Returns:
        (status_code, result, replayed).

    Failures (Problem) are not stored: nothing happened, so a retry runs again.
    """
    request_digest = digest(operation, body)
    if key is None:
        return status_code, transactional()(fn)(), False
    hit = lookup(client, key, request_digest)
    if hit:
        return hit

    @transactional()
    def attempt():
        result = fn()
        IdempotencyRecord.insert(client=client, key=key, operation=operation,
                                 request_digest=request_digest, status_code=status_code,
                                 response=json.dumps(result, separators=(",", ":"), ensure_ascii=False,
                                                     default=str)).execute()
        return result

    try:
        return status_code, attempt(), False
    except pw.IntegrityError:
        # A concurrent request with the same key committed first: its transaction won, ours rolled back.
        if db.in_transaction():
            raise
        hit = lookup(client, key, request_digest)
        if hit:
            return hit
        raise
