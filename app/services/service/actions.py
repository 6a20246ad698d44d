"""Acting for the user in the shop (代补开发票, 提交退换货申请, 取消订单): checked, idempotent, audited, never half-done.

An action is one ``ServiceAction`` row per (caller, Idempotency-Key). It is checked against the service
policy's ``actions`` limits (order status, age, amount) on a fresh read of the order, written ``pending``,
then sent to the shop with the row's own Idempotency-Key (so the shop applies it once however often it
is sent), and the shop's answer is recorded (``done``). A connector failure leaves it ``failed`` with the
error: the agent sees a clear problem, and the same request again re-sends the same key — exactly one
effect in the shop either way.
"""
import datetime as dt
import json

import peewee as pw

from app.db import transactional
from app.errors import Problem
from app.models.service import ServiceAction
from app.platform import audit, clock, idempotency, timefmt
from app.services.service import connectors
from app.services.service.policy import current

KINDS = ("invoice", "return", "cancel")
LABELS = {"invoice": "补开发票", "return": "退换货申请", "cancel": "取消订单"}


def view(a):
    return {"id": a.id, "kind": a.kind, "order_no": a.order_no, "user_id": a.user_id, "staff_no": a.staff_no,
            "conversation_id": a.conversation_id, "ticket_id": a.ticket_id, "params": json.loads(a.params),
            "state": a.state, "attempts": a.attempts,
            "response": json.loads(a.response) if a.response else None, "error": a.error,
            "policy_version": a.policy_version, "rule": a.rule, "created_at": timefmt.iso(a.created_at),
            "updated_at": timefmt.iso(a.updated_at)}


def _check(kind, order, body, cfg):
    """The policy rule that allows the action on this order, or a 409 ``action-not-allowed`` naming the rule."""
    limits = (cfg.doc.get("actions") or {}).get(kind)
    base = f"actions.{kind}"
    if limits is None:
        raise Problem(409, "action-not-allowed", "Action not allowed", f"the service policy has no {kind!r} action",
                      rule=base)
    if body.get("user_id") and order.get("user_id") and order["user_id"] != body["user_id"]:
        raise Problem(409, "action-not-allowed", "Action not allowed", "the order belongs to another user",
                      rule=f"{base}.user")
    if limits.get("statuses") and order.get("status") not in limits["statuses"]:
        raise Problem(409, "action-not-allowed", "Action not allowed",
                      f"order status {order.get('status')!r} is not one of {limits['statuses']}",
                      rule=f"{base}.statuses")
    if limits.get("max_order_age_days") is not None and order.get("created_at"):
        age = clock.now() - timefmt.parse(order["created_at"], "/order/created_at")
        if age > dt.timedelta(days=int(limits["max_order_age_days"])):
            raise Problem(409, "action-not-allowed", "Action not allowed",
                          f"the order is {age.days} days old (at most {limits['max_order_age_days']})",
                          rule=f"{base}.max_order_age_days")
    if limits.get("max_amount_fen") is not None and int(order.get("amount_fen") or 0) > int(limits["max_amount_fen"]):
        raise Problem(409, "action-not-allowed", "Action not allowed",
                      f"order amount {order.get('amount_fen')} fen is above {limits['max_amount_fen']}",
                      rule=f"{base}.max_amount_fen")
    return base


def act(kind, staff_no, client, key, body):
    """Take ``kind`` on an order for a user, exactly once per (client, key).

    Returns:
        (status, view): 201 done now, 200 replayed (already done).

    Raises:
        Problem: 409 ``action-not-allowed`` (policy rule named), 409 ``idempotency-key-reused``,
            404 order not found, 502/503 ``connector-failed``/``connector-unavailable`` (recorded; retry with
            the same key).
    """
    cfg = current()
    full_key = f"{client}:{key}"
    digest = idempotency.digest(f"service.action.{kind}", dict(body, _staff_no=staff_no))
    row = ServiceAction.get_or_none(ServiceAction.key == full_key)
    if row is None:
        order = connectors.connector().get_order(body["order_no"])  # fresh: a decision never uses the cache
        try:
            rule = _check(kind, order, body, cfg)
        except Problem as exc:
            with _tx():
                _decide(exc.extra.get("rule", f"actions.{kind}"), body, {"refused": exc.code, "detail": exc.detail},
                        cfg.version)
                audit.record(f"staff:{staff_no}", f"service.action.{kind}.refused", f"order:{body['order_no']}",
                             detail=exc.detail)
            raise
        try:
            row = _create(full_key, digest, kind, staff_no, body, order, rule, cfg)
        except pw.IntegrityError:
            row = ServiceAction.get(ServiceAction.key == full_key)  # a concurrent twin wrote it first
    if row.request_digest != digest:
        raise idempotency.reused()
    if row.state == "done":
        return 200, view(row)
    return _send(row)


def _tx():
    from app.db import write_transaction
    return write_transaction()


def _decide(rule, body, outcome, version):
    from app.policy import decisions
    decisions.record("service", version, rule, f"order:{body['order_no']}", body, outcome)


@transactional()
def _create(full_key, digest, kind, staff_no, body, order, rule, cfg):
    now = clock.now()
    row = ServiceAction.create(key=full_key, request_digest=digest, kind=kind, order_no=body["order_no"],
                               user_id=order.get("user_id") or body.get("user_id"), staff_no=staff_no,
                               conversation_id=body.get("conversation_id"), ticket_id=body.get("ticket_id"),
                               params=json.dumps(body.get("params") or {}, ensure_ascii=False), state="pending",
                               policy_version=cfg.version, rule=rule, created_at=now, updated_at=now)
    _decide(rule, body, {"allowed": True, "action_id": row.id}, cfg.version)
    audit.record(f"staff:{staff_no}", f"service.action.{kind}.requested", f"service:action:{row.id}",
                 order_no=body["order_no"], conversation_id=body.get("conversation_id"))
    return row


def _send(row):
    params = json.loads(row.params)
    try:
        answer = connectors.connector().perform(row.kind, row.order_no, params, key=f"patron-action-{row.id}")
    except Problem as exc:
        with _tx():
            ServiceAction.update(state="failed", attempts=ServiceAction.attempts + 1, error=f"{exc.code}: {exc.detail}",
                                 updated_at=clock.now()).where(ServiceAction.id == row.id).execute()
            audit.record(f"staff:{row.staff_no}", f"service.action.{row.kind}.failed", f"service:action:{row.id}",
                         error=exc.detail)
        exc.extra = dict(exc.extra, action_id=row.id)
        raise
    with _tx():
        ServiceAction.update(state="done", attempts=ServiceAction.attempts + 1, error=None,
                             response=json.dumps(answer, ensure_ascii=False, default=str),
                             updated_at=clock.now()).where(ServiceAction.id == row.id).execute()
        audit.record(f"staff:{row.staff_no}", f"service.action.{row.kind}.done", f"service:action:{row.id}",
                     answer=answer)
        if row.ticket_id:
            from app.services.service.compensation import _note_on_ticket
            _note_on_ticket(row.ticket_id, row.staff_no, f"已代用户{LABELS[row.kind]}：订单 {row.order_no} "
                                                         f"[action {row.id}]")
    connectors.forget("get_order", row.order_no)
    if row.user_id:
        connectors.forget("list_orders", row.user_id, 10)
    return 201, view(ServiceAction.get_by_id(row.id))


def get(action_id):
    from app.errors import not_found
    row = ServiceAction.get_or_none(ServiceAction.id == action_id)
    if row is None:
        raise not_found("action", action_id)
    return view(row)
