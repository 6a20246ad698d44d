"""Decision log: every state-changing decision with its ruleset, policy version, rule, inputs and outcome."""
import hashlib
import json
import secrets

from app.metrics import DECISIONS
from app.platform import clock, paging
from app.platform import sql as fastsql
from app.platform.timefmt import iso
from app.models.policy import Decision


def _canon(value):
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


def row(ruleset, version, rule, subject, inputs, outcome):
    """The decision-log row (column -> value) for one decision; ``record`` writes it, batch writers send it."""
    # every decision-log row goes through here (record() and the batch writers), so this is the count
    DECISIONS.labels(str(ruleset)[:100]).inc()
    text = _canon(inputs)
    return {"decision_id": "dec_" + secrets.token_hex(12), "ruleset": str(ruleset)[:100], "version": version,
            "rule": None if rule is None else str(rule)[:200], "subject": str(subject)[:200],
            "input_digest": hashlib.sha256(text.encode()).hexdigest(), "inputs": text,
            "outcome": _canon(outcome), "created_at": clock.now()}


def record(ruleset, version, rule, subject, inputs, outcome):
    """Append one decision (call inside the transaction of the change it explains).

    Args:
        ruleset: ruleset (or policy kind) that decided, e.g. ``ticket_routing``.
        version: policy set version in force.
        rule: the rule that fired (None: no rule matched).
        subject: what the decision is about, e.g. ``ticket:T-42`` or ``member:u1``.
        inputs: the facts used (JSON-able).
        outcome: what was decided (JSON-able).

    Returns:
        the decision id (``dec_`` + 24 hex).
    """
    values = row(ruleset, version, rule, subject, inputs, outcome)
    fastsql.insert(Decision, [values])  # a prepared INSERT: decisions sit on hot paths (assignment)
    return values["decision_id"]


def _row(d):
    return {"decision_id": d.decision_id, "ruleset": d.ruleset, "version": d.version, "rule": d.rule,
            "subject": d.subject, "input_digest": d.input_digest, "inputs": json.loads(d.inputs),
            "outcome": json.loads(d.outcome), "at": iso(d.created_at)}


def for_subject(subject, limit=1000):
    """Decisions about one subject, oldest first."""
    q = (Decision.select().where(Decision.subject == str(subject))
         .order_by(Decision.created_at, Decision.id).limit(limit))
    return [_row(d) for d in q]


def page(subject, cursor=None, limit=50):
    """One page of the decisions about a subject, oldest first (keyset on (created_at, id)).

    Returns:
        (items, next_cursor or None).
    """
    rows, nxt = paging.keyset(Decision.select().where(Decision.subject == str(subject)),
                              (Decision.created_at, Decision.id), cursor, limit, desc=False)
    return [_row(d) for d in rows], nxt


def get(decision_id):
    d = Decision.get_or_none(Decision.decision_id == decision_id)
    return None if d is None else _row(d)
