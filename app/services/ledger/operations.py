"""Ledger operations: customers and accounts, the exactly-once operations (recharge ... lots), the batch."""
from app.db import for_update, is_postgres
from app.errors import Problem, validation_failed
from app.models.ledger import LedgerAccount, LedgerConsume, LedgerCustomer, LedgerHold
from app.platform import audit, idempotency
from app.policy import decisions
from app.schemas import errors_of
from app.services.ledger import core
from app.services.ledger import lot_operations
from app.services.ledger.core import Ctx, Leg, account_ref, config, insufficient, post, system
from app.services.ledger.reads import _hold_dict, balances, hold_state
from app.platform import timefmt


MAX_BATCH = 1000

# For callers posting several operations in one transaction: retries deadlocks like app.db's, and counts them.
transactional = core.transactional


def retry_counts():
    """Transactions retried by ``transactional()`` in this process, by cause (deadlock, serialization, ...)."""
    return dict(core.RETRIES)


# --------------------------------------------------------------------------- customers


def ensure_customer(external_ref, kind="user"):
    """Create the customer (if new) and open the accounts its kind gets under the ledger policy.

    Idempotent: calling it again only opens accounts the policy added since.

    Args:
        external_ref: the customer's id in the caller's system (user id, merchant no.).
        kind: ``user`` or ``merchant``.

    Returns:
        the customer's balances (see :func:`balances`).
    """
    cfg = config()
    if kind not in cfg.customer_kinds:
        raise Problem(422, "unknown-customer-kind", "Unknown customer kind",
                      f"customer kind {kind!r} is not defined in the ledger policy",
                      known=sorted(cfg.customer_kinds))
    if external_ref == core.SYSTEM_CUSTOMER:
        raise Problem(422, "reserved-customer", "Reserved customer", "this reference is reserved")

    @transactional()
    def run():
        LedgerCustomer.insert(external_ref=external_ref, kind=kind).on_conflict_ignore().execute()
        cust = LedgerCustomer.get(LedgerCustomer.external_ref == external_ref)
        if cust.kind != kind:
            raise Problem(409, "customer-kind-mismatch", "Customer kind mismatch",
                          f"customer {external_ref!r} exists as a {cust.kind}", kind=cust.kind)
        have = {(a.type, a.label) for a in LedgerAccount.select(LedgerAccount.type, LedgerAccount.label)
                .where(LedgerAccount.customer == cust.id)}
        for atype in cfg.customer_kinds[kind]["accounts"]:
            if (atype, "default") not in have:
                core.ensure_account(cust.id, atype, "default", cfg)
        return balances(external_ref)
    return run()


def open_account(external_ref, account_type, label):
    """Open one more account of a type the customer's kind may hold several of (merchants)."""
    cfg = config()
    cfg.account_type(account_type)

    @transactional()
    def run():
        cust = LedgerCustomer.get_or_none(LedgerCustomer.external_ref == external_ref)
        if cust is None:
            raise Problem(404, "customer-not-found", "Customer not found",
                          f"customer {external_ref!r} does not exist", customer=external_ref)
        spec = cfg.customer_kinds.get(cust.kind, {})
        allowed = set(spec.get("accounts", ())) if label == "default" else set(spec.get("multiple", ()))
        if account_type not in allowed:
            raise Problem(422, "account-type-not-allowed", "Account type not allowed",
                          f"a {cust.kind} may not open a {account_type!r} account labelled {label!r}")
        core.ensure_account(cust.id, account_type, label, cfg)
        return balances(external_ref)
    return run()


# --------------------------------------------------------------------------- operations


def _no_lots(acct, op):
    if config().is_lot_asset(acct.asset):
        raise Problem(422, "lot-asset", "Lot-based asset",
                      f"{acct.asset} moves only by grant_lot / spend_lot, not {op}", account=acct.name())


def _need(acct, sub, amount):
    have = acct.balance(sub)
    if have < amount:
        raise insufficient(amount, have, acct.name())


def op_recharge(ctx, body):
    cfg = config()
    (acct,) = core.lock_accounts([account_ref(body)], shard_of=_route_shard(cfg, "recharge_from", account_ref(body)))
    _no_lots(acct, "recharge")
    src = cfg.system_code(cfg.routes["recharge_from"], acct.asset)
    j = post(ctx, "recharge", [Leg(system(src, acct.asset), "main", -body["amount"]),
                               Leg(acct, "available", body["amount"])], rule="routes.recharge_from")
    return {"journal": j}


def op_transfer(ctx, body):
    src_ref, dst_ref = account_ref(body["from"]), account_ref(body["to"])
    if src_ref == dst_ref:
        raise Problem(422, "same-account", "Same account", "from and to name the same account")
    src, dst = core.lock_accounts([src_ref, dst_ref])
    if src.asset != dst.asset:
        raise Problem(422, "asset-mismatch", "Asset mismatch", f"{src.asset} -> {dst.asset}")
    _no_lots(src, "transfer")
    _need(src, "available", body["amount"])
    j = post(ctx, "transfer", [Leg(src, "available", -body["amount"]), Leg(dst, "available", body["amount"])],
             rule="transfer: available -> available")
    return {"journal": j}


def _route_shard(cfg, route, ref):
    """(system code, asset) a posting from/to account ``ref`` goes to by ``routes.<route>``, as far as the policy
    tells before the account is read (``lock_accounts(shard_of=...)``); None when it cannot tell."""
    asset = (cfg.account_types.get(ref[1]) or {}).get("asset")
    code = cfg.routes.get(route)
    if asset is None or cfg.is_lot_asset(asset) or asset not in cfg.system.get(code, ()):
        return None
    return (code, asset)


def _decide_consume(body):
    """Lock (or reuse) the accounts and split the amount: (legs, counter columns, consume summary)."""
    cfg = config()
    amount = body["amount"]
    refs = [account_ref(body)]
    if body.get("payee"):
        refs.append(account_ref(body["payee"]))
        if refs[0] == refs[1]:
            raise Problem(422, "same-account", "Same account", "payer and payee are the same account")
    locked = core.lock_accounts(refs, shard_of=None if body.get("payee") else _route_shard(cfg, "consume_to", refs[0]))
    acct = locked[0]
    _no_lots(acct, "consume")
    limit = cfg.overdraft_limit(acct.type)
    cashback = max(0, acct.balance("cashback"))
    available = max(0, acct.balance("available"))
    headroom = max(0, limit + acct.balance("overdraft")) if acct.has("overdraft") else 0
    spendable = cashback + available + headroom
    if spendable < amount:
        raise insufficient(amount, spendable, acct.name())
    use_c = min(cashback, amount)
    use_a = min(available, amount - use_c)
    use_o = amount - use_c - use_a
    if len(locked) > 1:
        payee = locked[1]
        if payee.asset != acct.asset:
            raise Problem(422, "asset-mismatch", "Asset mismatch", f"{acct.asset} -> {payee.asset}")
        payee_leg, payee_id = Leg(payee, "available", amount), payee.id
    else:
        payee = system(cfg.system_code(cfg.routes["consume_to"], acct.asset), acct.asset)
        payee_leg, payee_id = Leg(payee, "main", amount), core.system_shards(payee[1], payee[2])[0]
    legs = [Leg(acct, "cashback", -use_c), Leg(acct, "available", -use_a), Leg(acct, "overdraft", -use_o),
            payee_leg]
    counter = {"account_id": acct.id, "payee_id": payee_id, "amount_minor": amount, "cashback_minor": use_c,
               "available_minor": use_a, "overdraft_minor": use_o, "refunded_cashback_minor": 0,
               "refunded_available_minor": 0, "refunded_overdraft_minor": 0}
    summary = {"amount": amount, "cashback": use_c, "available": use_a, "overdraft": use_o, "refundable": amount}
    return legs, counter, summary, f"consume: cashback > available > overdraft (limit {limit})"


def op_consume(ctx, body):
    """Cashback first, then available, then overdraft down to its limit; one journal."""
    legs, counter, summary, rule = _decide_consume(body)
    j = post(ctx, "consume", legs, rule=rule, extra=("ledger_consume", counter))
    return {"journal": j, "consume": {"journal_id": j["id"], **summary}}


def op_refund(ctx, body):
    """Back along the consume's route, in reverse order of use; the consume row is the refund counter."""
    cid = body["consume_id"]
    row = for_update(LedgerConsume.select().where(LedgerConsume.journal == cid)).first()
    if row is None:
        raise Problem(404, "consume-not-found", "Consume not found", f"journal {cid} is not a consume")
    refunded = row.refunded_cashback_minor + row.refunded_available_minor + row.refunded_overdraft_minor
    remaining = row.amount_minor - refunded
    amount = body["amount"]
    if amount > remaining:
        raise Problem(422, "refund-exceeds-remaining", "Refund exceeds remaining",
                      f"refund {amount} > refundable {remaining}", requested=amount, remaining=remaining)
    payee_acct = LedgerAccount.get_by_id(row.payee_id)
    ids = [row.account_id] if payee_acct.is_system else [row.account_id, row.payee_id]
    locked = core.lock_accounts(account_ids=ids)
    acct = locked[0]
    # What the refund takes back from each route of the consume, in reverse order of use.
    from_o = min(amount, row.overdraft_minor - row.refunded_overdraft_minor)
    from_a = min(amount - from_o, row.available_minor - row.refunded_available_minor)
    from_c = amount - from_o - from_a
    # Where it lands: overdraft, but never above zero (if the customer repaid it meanwhile, the
    # excess goes to available).
    back_o = min(from_o, max(0, -acct.balance("overdraft")))
    back_a = from_a + (from_o - back_o)
    back_c = from_c
    if payee_acct.is_system:
        payee_leg = Leg(system(payee_acct.type, payee_acct.asset), "main", -amount)
    else:
        payee = locked[1]
        _need(payee, "available", amount)
        payee_leg = Leg(payee, "available", -amount)
    j = post(ctx, "refund", [payee_leg, Leg(acct, "overdraft", back_o), Leg(acct, "available", back_a),
                             Leg(acct, "cashback", back_c)],
             rule="refund: reverse order of use (overdraft > available > cashback)")
    (LedgerConsume.update(refunded_overdraft_minor=LedgerConsume.refunded_overdraft_minor + from_o,
                          refunded_available_minor=LedgerConsume.refunded_available_minor + from_a,
                          refunded_cashback_minor=LedgerConsume.refunded_cashback_minor + from_c)
     .where(LedgerConsume.id == row.id).execute())
    return {"journal": j, "refund": {"consume_id": cid, "amount": amount, "overdraft": back_o,
                                     "available": back_a, "cashback": back_c,
                                     "refundable_after": remaining - amount}}


def _take_hold(ctx, body, kind):
    cfg = config()
    (acct,) = core.lock_accounts([account_ref(body)])
    _no_lots(acct, kind)
    _need(acct, "available", body["amount"])
    if not acct.has("frozen"):
        raise Problem(422, "no-such-sub-account", "No frozen sub-account", f"{acct.name()} cannot freeze")
    jtype = "withdraw_hold" if kind == "withdraw" else "freeze"
    j = post(ctx, jtype, [Leg(acct, "available", -body["amount"]), Leg(acct, "frozen", body["amount"])],
             rule="holds.withdraw_timeout_minutes" if kind == "withdraw" else "freeze: risk control")
    now = ctx.now()
    hold = LedgerHold.create(account=acct.id, customer=acct.customer_id, kind=kind, amount_minor=body["amount"],
                             remaining_minor=body["amount"], reason=body.get("reason"),
                             external_ref=body.get("external_ref"), journal=j["id"], created_at=now,
                             expires_at=now + cfg.hold_timeout if kind == "withdraw" else None)
    return {"journal": j, "hold": _hold_dict(hold)}


def op_withdraw(ctx, body):
    return _take_hold(ctx, body, "withdraw")


def op_freeze(ctx, body):
    return _take_hold(ctx, body, "risk")


def _lock_hold(hold_id, kind):
    hold = for_update(LedgerHold.select().where(LedgerHold.id == hold_id)).first()
    if hold is None:
        raise Problem(404, "hold-not-found", "Hold not found", f"hold {hold_id} does not exist")
    if hold.kind != kind:
        raise Problem(409, "wrong-hold-kind", "Wrong hold kind", f"hold {hold_id} is a {hold.kind} hold",
                      kind=hold.kind)
    if hold.state != "held":
        raise Problem(409, "hold-not-held", "Hold already resolved",
                      f"hold {hold_id} is {hold.state}", state=hold.state)
    return hold


def _hold_amount(body, hold, verb, held):
    """The part of a hold an operation moves: ``body["amount"]`` (default all of it), never more than it holds."""
    amount = body.get("amount", hold.remaining_minor)
    if amount > hold.remaining_minor:
        raise Problem(422, "amount-exceeds-hold", "Amount exceeds hold",
                      f"{verb} {amount} > {held} {hold.remaining_minor}", held=hold.remaining_minor)
    return amount


def _resolve(ctx, hold, state, journal_id, settled=0):
    now = ctx.now()
    LedgerHold.update(state=state, remaining_minor=0, settled_minor=settled, resolved_journal=journal_id,
                      resolved_at=now).where(LedgerHold.id == hold.id).execute()
    hold.state, hold.remaining_minor, hold.settled_minor = state, 0, settled
    hold.resolved_journal_id, hold.resolved_at = journal_id, now


def op_settle_hold(ctx, body):
    """Frozen -> bank clearing for the settled part; the remainder goes back to available."""
    cfg = config()
    hold = _lock_hold(body["hold_id"], "withdraw")
    if hold_state(hold, ctx.now()) == "expired":
        raise Problem(409, "hold-expired", "Hold expired",
                      f"hold {hold.id} expired at {timefmt.iso(hold.expires_at)}; its money goes back to available",
                      expires_at=timefmt.iso(hold.expires_at))
    amount = _hold_amount(body, hold, "settle", "held")
    (acct,) = core.lock_accounts(account_ids=[hold.account_id])
    dst = cfg.system_code(cfg.routes["withdraw_to"], acct.asset)
    ctx.allow_blocked = True  # resolving an existing hold is not a new debit/credit decision
    j = post(ctx, "withdraw_settle", [Leg(acct, "frozen", -hold.remaining_minor),
                                      Leg(system(dst, acct.asset), "main", amount),
                                      Leg(acct, "available", hold.remaining_minor - amount)],
             rule="routes.withdraw_to")
    _resolve(ctx, hold, "settled", j["id"], settled=amount)
    return {"journal": j, "hold": _hold_dict(hold)}


def _release(ctx, hold_id, state):
    hold = _lock_hold(hold_id, "withdraw")
    (acct,) = core.lock_accounts(account_ids=[hold.account_id])
    ctx.allow_blocked = True
    j = post(ctx, "withdraw_release" if state == "released" else "withdraw_expire",
             [Leg(acct, "frozen", -hold.remaining_minor), Leg(acct, "available", hold.remaining_minor)],
             rule="release" if state == "released" else "holds.withdraw_timeout_minutes")
    _resolve(ctx, hold, state, j["id"])
    return {"journal": j, "hold": _hold_dict(hold)}


def op_release_hold(ctx, body):
    return _release(ctx, body["hold_id"], "released")


def op_expire_hold(ctx, body):
    return _release(ctx, body["hold_id"], "expired")


def op_unfreeze(ctx, body):
    hold = _lock_hold(body["hold_id"], "risk")
    amount = _hold_amount(body, hold, "unfreeze", "frozen")
    (acct,) = core.lock_accounts(account_ids=[hold.account_id])
    ctx.allow_blocked = True
    j = post(ctx, "unfreeze", [Leg(acct, "frozen", -amount), Leg(acct, "available", amount)],
             rule="unfreeze: risk control")
    left = hold.remaining_minor - amount
    if left == 0:
        _resolve(ctx, hold, "released", j["id"])
    else:
        LedgerHold.update(remaining_minor=left).where(LedgerHold.id == hold.id).execute()
        hold.remaining_minor = left
    return {"journal": j, "hold": _hold_dict(hold)}


def _set_block(ctx, body, value):
    if not body.get("debit") and not body.get("credit"):
        raise validation_failed([{"pointer": "/debit", "validator": "required",
                                  "message": "set debit and/or credit to true"}])
    (acct,) = core.lock_accounts([account_ref(body)])
    changes = {}
    if body.get("debit"):
        changes["debit_blocked"] = value
    if body.get("credit"):
        changes["credit_blocked"] = value
    changes["block_reason"] = body.get("reason")
    LedgerAccount.update(**changes).where(LedgerAccount.id == acct.id).execute()
    acct.debit_blocked = changes.get("debit_blocked", acct.debit_blocked)
    acct.credit_blocked = changes.get("credit_blocked", acct.credit_blocked)
    a = LedgerAccount.get_by_id(acct.id)
    audit.record(ctx.actor, f"ledger.{ctx.op}", acct.name(), reason=body.get("reason"),
                 debit=body.get("debit", False), credit=body.get("credit", False),
                 policy_version=core.policy_version())
    # No journal records a block, so the decision log does (why can't this account pay?).
    decisions.record("ledger", core.policy_version(), f"{ctx.op} by {ctx.actor}", f"ledger-account:{acct.name()}",
                     {"reason": body.get("reason"), "debit": body.get("debit", False),
                      "credit": body.get("credit", False)},
                     {"debit_blocked": bool(a.debit_blocked), "credit_blocked": bool(a.credit_blocked)})
    return {"account": {"id": a.id, **acct.ref(), "debit_blocked": a.debit_blocked,
                        "credit_blocked": a.credit_blocked, "block_reason": a.block_reason}}


def op_block(ctx, body):
    return _set_block(ctx, body, True)


def op_unblock(ctx, body):
    return _set_block(ctx, body, False)


def op_settlement(ctx, body):
    """Bill-based movement between a customer sub-account and a system account (fees, payouts, cashback)."""
    cfg = config()
    (acct,) = core.lock_accounts([account_ref(body)])
    _no_lots(acct, "settlement")
    sub = body.get("sub", "available")
    direction = body["direction"]
    default = cfg.routes["settlement_in_from" if direction == "in" else "settlement_out_to"]
    counter = system(cfg.system_code(body.get("counterparty") or default, acct.asset), acct.asset)
    amount = body["amount"]
    if direction == "out":
        _need(acct, sub, amount)
        legs = [Leg(acct, sub, -amount), Leg(counter, "main", amount)]
    else:
        legs = [Leg(counter, "main", -amount), Leg(acct, sub, amount)]
    j = post(ctx, f"settlement_{direction}", legs, rule=f"routes.settlement_{direction}")
    return {"journal": j}


def op_credit_draw(ctx, body):
    """Draw on the credit line: credit.overdraft goes down (to -limit), cash.available goes up."""
    cfg = config()
    label = body.get("label") or "default"
    credit, cash = core.lock_accounts([(body["customer"], "credit", label), (body["customer"], "cash", label)])
    limit = cfg.overdraft_limit("credit")
    headroom = limit + credit.balance("overdraft")
    if body["amount"] > headroom:
        raise Problem(409, "credit-limit-exceeded", "Credit limit exceeded",
                      f"draw {body['amount']} > headroom {headroom} (limit {limit})",
                      needed=body["amount"], available=headroom, account=credit.name(), limit=limit)
    j = post(ctx, "credit_draw", [Leg(credit, "overdraft", -body["amount"]), Leg(cash, "available", body["amount"])],
             rule=f"account_types.credit.overdraft_limit={limit}")
    return {"journal": j}


def op_credit_repay(ctx, body):
    label = body.get("label") or "default"
    target_type = body.get("account_type") or "credit"
    if target_type == "cash":
        (cash,) = core.lock_accounts([(body["customer"], "cash", label)])
        target = cash
    else:
        target, cash = core.lock_accounts([(body["customer"], target_type, label), (body["customer"], "cash", label)])
    if not target.has("overdraft"):
        raise Problem(422, "no-such-sub-account", "No overdraft", f"{target.name()} has no overdraft")
    owed = -target.balance("overdraft")
    if body["amount"] > owed:
        raise Problem(422, "repay-exceeds-debt", "Repayment exceeds debt",
                      f"repay {body['amount']} > outstanding {owed}", outstanding=owed)
    _need(cash, "available", body["amount"])
    j = post(ctx, "credit_repay", [Leg(cash, "available", -body["amount"]), Leg(target, "overdraft", body["amount"])],
             rule="credit_repay")
    return {"journal": j}


OPERATIONS = {
    "recharge": op_recharge, "transfer": op_transfer, "withdraw": op_withdraw,
    "settle_hold": op_settle_hold, "release_hold": op_release_hold, "consume": op_consume,
    "refund": op_refund, "freeze": op_freeze, "unfreeze": op_unfreeze, "block": op_block,
    "unblock": op_unblock, "settlement": op_settlement, "credit_draw": op_credit_draw,
    "credit_repay": op_credit_repay,
}
OPERATIONS.update(lot_operations.OPERATIONS)  # grants, spends, refunds of lot assets
INTERNAL_OPERATIONS = {"expire_hold": op_expire_hold, **lot_operations.INTERNAL_OPERATIONS}
NO_JOURNAL = {"block", "unblock"}


def status_of(op):
    return 200 if op in NO_JOURNAL else 201


def _validate(op, body):
    if op not in OPERATIONS and op not in INTERNAL_OPERATIONS:
        raise Problem(422, "unknown-operation", "Unknown operation", f"no ledger operation {op!r}",
                      known=sorted(OPERATIONS))
    if op in OPERATIONS:
        errors = errors_of(f"api/ledger/{op}.json", body)
        if errors:
            raise validation_failed(errors)


def execute(op, body, actor, idempotency_key=None, client="internal", validated=False, journal_key=None,
            at=None, audit_row=False):
    """Run one operation exactly once per (client, key); returns (status, result, replayed).

    The contract is ``app.platform.idempotency.run``'s: a success or a business refusal is stored under
    the key and replayed. ``journal_key`` (batch items without their own key) labels the journal only:
    the batch's own idempotency record already makes the whole batch exactly-once. ``at`` (naive UTC
    or ISO 8601) is the instant the operation's time decisions use; default ``app.platform.clock.now()``.
    ``audit_row``: the HTTP request's audit row is written in the operation's transaction (one commit).
    """
    if isinstance(at, str):
        at = timefmt.parse(at, "/at")
    if not validated:
        _validate(op, body)
    fn = OPERATIONS.get(op) or INTERNAL_OPERATIONS[op]
    operation = f"ledger.{op}"

    def run():
        ctx = Ctx(op=op, actor=actor, client=client, key=idempotency_key or journal_key, digest=digest,
                  external_ref=body.get("bill_ref") or body.get("external_ref"), metadata=body.get("metadata"),
                  at=at)
        result = {"operation": op, **fn(ctx, body)}
        return result

    digest = idempotency.digest(operation, body)
    return idempotency.run(client, idempotency_key, operation, body, run, status_of(op), request_digest=digest,
                           audit_row=audit_row)


def apply_operation(op, body, actor, idempotency_key=None, client="internal", at=None):
    """Apply one ledger operation, exactly once per (client, idempotency_key).

    Runs in the caller's transaction if one is open (so a caller's other writes commit or roll back
    with the journal); otherwise in its own, retried on deadlock/serialization failures.

    Args:
        op: one of OPERATIONS (recharge, transfer, withdraw, settle_hold, release_hold, consume, refund,
            freeze, unfreeze, block, unblock, settlement, credit_draw, credit_repay, grant_lot, spend_lot).
        body: the JSON body the HTTP endpoint takes (validated against schemas/api/ledger/<op>.json).
        actor: who acts (``auth.actor(principal)`` or ``"system"``); recorded on the journal.
        idempotency_key: same key + same body -> the stored result; other body -> 409.
        client: namespace of the key (the API key id for HTTP callers).
        at: the instant the operation's time decisions use (lot liveness, hold expiry, journal time);
            default ``app.platform.clock.now()``, never the wall clock directly.

    Returns:
        dict with ``operation``, ``journal`` (id, entries with balance_after, policy_version, rule) and
        op-specific parts (``hold``, ``consume``, ``refund``, ``lot``, ``lots_used``, ``account``).

    Raises:
        Problem: 409 insufficient-funds (needed, available, account), 409 idempotency-key-reused,
            404 *-not-found, 409 account-blocked / hold-not-held, 422 validation-failed and others.
    """
    return execute(op, body, actor, idempotency_key, client, at=at)[1]


def apply_batch(items, actor, client="internal", batch_key=None):
    """Apply up to 1,000 operations in ONE transaction with per-item results.

    A failing item reports its problem and the others commit together. Items need no savepoints:
    every operation decides (and raises its Problem) before its first write, and the batch checks
    it: an item that failed after writing aborts the whole batch instead of committing half of
    it. (No savepoints also keeps PostgreSQL's subtransaction cache from overflowing.) Each item
    may carry its own ``idempotency_key``; otherwise its journal is labelled ``<batch key>#<index>``
    and the batch's own key makes the batch exactly-once.

    Returns:
        {"results": [{"index", "status", "result" | "problem"}], "succeeded", "failed"}; an item's
        result is the operation's result without the journal's entries.
    """
    if len(items) > MAX_BATCH:
        raise validation_failed([{"pointer": "/operations", "validator": "maxItems",
                                  "message": f"at most {MAX_BATCH} operations per batch"}])

    @transactional()
    def run():
        with core.batch_scope() as state:
            _prelock(items)
            results, ok = [], 0
            bulk = core.BulkWriter() if is_postgres() else None
            for i, item in enumerate(items):
                own = item.get("idempotency_key")
                derived = f"{batch_key}#{i}" if batch_key and not own else None
                if bulk is not None and item["op"] == "consume" and not own:
                    # Runs of plain consumes are decided one by one (on the locked rows) and written
                    # together: a few multi-row statements per run instead of one per item.
                    results.append(_bulk_consume(bulk, i, item["body"], actor, client, derived))
                    continue
                if bulk is not None and bulk.pending:
                    bulk.flush()
                writes = state["writes"]
                try:
                    status, result, replayed = execute(item["op"], item["body"], actor, own, client,
                                                       journal_key=derived)
                    results.append({"index": i, "status": status, "replayed": replayed,
                                    "result": _compact(result)})
                    ok += 1
                except Problem as exc:
                    if state["writes"] != writes:
                        raise RuntimeError(f"batch item {i} failed after writing; batch aborted") from exc
                    results.append({"index": i, "status": exc.status, "problem": exc.to_dict()})
            if bulk is not None and bulk.pending:
                bulk.flush()
            results = [r() if callable(r) else r for r in results]
            ok = sum(1 for r in results if "result" in r)
            return {"results": results, "succeeded": ok, "failed": len(items) - ok}
    return run()


def _bulk_consume(bulk, index, body, actor, client, journal_key):
    """Decide one consume of a batch now, write it with the bulk writer; returns its result (or a thunk)."""
    try:
        _validate("consume", body)
        legs, counter, summary, rule = _decide_consume(body)
        ctx = Ctx(op="consume", actor=actor, client=client, key=journal_key,
                  digest=idempotency.digest("ledger.consume", body), external_ref=body.get("external_ref"),
                  metadata=body.get("metadata"))
        pending = bulk.add(ctx, "consume", legs, rule, ("ledger_consume", counter))
    except Problem as exc:  # decided before anything was written: nothing to undo
        return {"index": index, "status": exc.status, "problem": exc.to_dict()}

    def result():
        journal = {k: v for k, v in pending.journal().items() if k != "entries"}
        return {"index": index, "status": 201, "replayed": False,
                "result": {"operation": "consume", "journal": journal,
                           "consume": {"journal_id": journal["id"], **summary}}}
    return result


def _compact(result):
    """A batch item's result without the journal's entries (GET /v1/ledger/journals/<id> has them)."""
    journal = result.get("journal")
    if not journal:
        return result
    return {**result, "journal": {k: v for k, v in journal.items() if k != "entries"}}


def _prelock(items):
    """Lock every customer account the batch names, once, in id order, before any item runs.

    Items then find their rows already locked, so concurrent batches (and single postings) take
    locks in one global order instead of item by item, which would deadlock between batches.
    """
    refs = set()
    for item in items:
        body = item.get("body") if isinstance(item, dict) else None
        if not isinstance(body, dict):
            continue
        for part in (body, body.get("from"), body.get("to"), body.get("payee")):
            if isinstance(part, dict) and isinstance(part.get("customer"), str):
                atype, label = part.get("account_type") or "cash", part.get("label") or "default"
                if isinstance(atype, str) and isinstance(label, str):
                    refs.add((part["customer"], atype, label))
        if item.get("op") == "credit_draw" and isinstance(body.get("customer"), str):
            refs.add((body["customer"], "credit", body.get("label") or "default"))
    if refs:
        core.lock_accounts(sorted(refs), strict=False)
