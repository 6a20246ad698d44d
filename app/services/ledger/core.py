"""Ledger mechanics: the ledger policy, account resolution, row locking in one global order, posting journals."""
import datetime as dt
import json
import logging
import random
import threading
import time
from dataclasses import dataclass, field

import peewee as pw

from app import policy
from app.db import RETRIES as DB_RETRIES, db, is_postgres
from app.db import transactional as db_transactional
from app.errors import Problem
from app.platform import clock
from app.models.ledger import (LedgerAccount, LedgerBalance, LedgerCustomer, LedgerEntry,
                               LedgerJournal)
from app.platform.timefmt import iso

SYSTEM_CUSTOMER = "__system__"
SYSTEM_LABEL = "system"
SYSTEM_SUB = "main"
CUSTOMER_SUBS = ("available", "cashback", "frozen", "overdraft")

# --------------------------------------------------------------------------- policy


@dataclass
class AssetsConfig:
    """The `ledger` policy, compiled for lookups."""
    version: str
    assets: dict
    account_types: dict
    customer_kinds: dict
    hold_timeout: dt.timedelta
    shards: int
    system: dict  # code -> [assets]
    routes: dict

    def account_type(self, name):
        spec = self.account_types.get(name)
        if spec is None:
            raise Problem(422, "unknown-account-type", "Unknown account type",
                          f"account type {name!r} is not defined in the ledger policy",
                          known=sorted(self.account_types))
        return spec

    def overdraft_limit(self, account_type):
        spec = self.account_types.get(account_type) or {}
        if "overdraft" not in spec.get("sub_accounts", ()):
            return 0
        return int(spec.get("overdraft_limit", 0))

    def is_lot_asset(self, asset):
        return bool(self.assets.get(asset, {}).get("lots"))

    def system_code(self, code, asset):
        if asset not in self.system.get(code, ()):
            raise Problem(422, "unknown-system-account", "Unknown system account",
                          f"system account {code!r} does not hold asset {asset!r} in the ledger policy")
        return code

    def lot_route(self, asset, what):
        route = (self.routes.get("lots") or {}).get(asset)
        if not route:
            raise Problem(422, "not-a-lot-asset", "Not a lot asset",
                          f"asset {asset!r} has no lot routes in the ledger policy")
        return route[what]


def _compile(ps):
    doc = ps.one("ledger")
    return AssetsConfig(
        version=ps.version,
        assets=doc["assets"],
        account_types=doc["account_types"],
        customer_kinds=doc["customer_kinds"],
        hold_timeout=dt.timedelta(minutes=int(doc["holds"]["withdraw_timeout_minutes"])),
        shards=int(doc["system_accounts"].get("shards", 1)),
        system={k: list(v) for k, v in doc["system_accounts"]["accounts"].items()},
        routes=doc["routes"],
    )


def config():
    """The compiled `ledger` policy of the active policy set (once per policy version)."""
    return policy.derived("ledger.policy", _compile)


def policy_version():
    return policy.active_version() or config().version


def cross_check(doc, *_args, **_kwargs):
    """Cross-checks of a `ledger` policy document: every name it uses is defined. Returns messages."""
    errors = []
    assets = doc.get("assets") or {}
    types = doc.get("account_types") or {}
    system = ((doc.get("system_accounts") or {}).get("accounts")) or {}
    for name, spec in types.items():
        if spec.get("asset") not in assets:
            errors.append(f"$.account_types.{name}.asset: unknown asset {spec.get('asset')!r}")
        if assets.get(spec.get("asset"), {}).get("lots") and set(spec.get("sub_accounts", ())) - {"available", "frozen"}:
            errors.append(f"$.account_types.{name}.sub_accounts: a lot asset has only available/frozen")
        if spec.get("overdraft_limit") and "overdraft" not in spec.get("sub_accounts", ()):
            errors.append(f"$.account_types.{name}.overdraft_limit: needs an overdraft sub-account")
    for kind, spec in (doc.get("customer_kinds") or {}).items():
        for i, t in enumerate(spec.get("accounts", ())):
            if t not in types:
                errors.append(f"$.customer_kinds.{kind}.accounts[{i}]: unknown account type {t!r}")
        for i, t in enumerate(spec.get("multiple", ())):
            if t not in types:
                errors.append(f"$.customer_kinds.{kind}.multiple[{i}]: unknown account type {t!r}")
    for code, held in system.items():
        for a in held:
            if a not in assets:
                errors.append(f"$.system_accounts.accounts.{code}: unknown asset {a!r}")
    routes = doc.get("routes") or {}
    cash_assets = {s.get("asset") for s in types.values() if not assets.get(s.get("asset"), {}).get("lots")}
    for key in ("recharge_from", "withdraw_to", "consume_to", "settlement_in_from", "settlement_out_to"):
        code = routes.get(key)
        if code is None:
            continue
        if code not in system:
            errors.append(f"$.routes.{key}: unknown system account {code!r}")
        else:
            for a in sorted(cash_assets - set(system[code])):
                errors.append(f"$.routes.{key}: system account {code!r} does not hold {a!r}")
    for asset, route in (routes.get("lots") or {}).items():
        if not assets.get(asset, {}).get("lots"):
            errors.append(f"$.routes.lots.{asset}: asset is not a lot asset")
        for what, code in route.items():
            if asset not in system.get(code, ()):
                errors.append(f"$.routes.lots.{asset}.{what}: system account {code!r} does not hold {asset!r}")
    for asset, spec in assets.items():
        if spec.get("lots") and asset not in (routes.get("lots") or {}):
            errors.append(f"$.assets.{asset}: lot asset without routes.lots.{asset}")
    return errors


def cross_check_set(policy_set):
    """The policy engine's hook: cross-checks of every `ledger` document, as (file, path, message)."""
    out = []
    for doc in policy_set.get("ledger"):
        for text in cross_check(doc):
            path, _, message = text.partition(": ")
            out.append((doc.get("_file"), path, message))
    return out


# --------------------------------------------------------------------------- transactions

log = logging.getLogger(__name__)
# The ledger's batch and callers posting several operations in one transaction use the product-wide
# retrying transaction; RETRIES counts its retries by cause (tests assert on it).
transactional = db_transactional
RETRIES = DB_RETRIES


# --------------------------------------------------------------------------- helpers


def param():
    return db.obj.param


def placeholders(n):
    return ", ".join([param()] * n)


def insufficient(needed, available, account):
    return Problem(409, "insufficient-funds", "Insufficient funds",
                   f"needed {needed}, available {available} in account {account}",
                   needed=needed, available=available, account=account)


# --------------------------------------------------------------------------- accounts


@dataclass
class Account:
    id: int
    customer_id: int
    customer: str
    type: str
    label: str
    asset: str
    debit_blocked: bool
    credit_blocked: bool
    is_system: bool = False
    subs: dict = field(default_factory=dict)  # sub -> [balance_id, balance_minor]
    shard: tuple = None  # ((code, asset), shard row id) taken with this account's rows (lock_accounts(shard_of=))

    def ref(self):
        return {"customer": self.customer, "account_type": self.type, "label": self.label}

    def name(self):
        return f"{self.customer}/{self.type}/{self.label}"

    def balance(self, sub):
        return self.subs[sub][1] if sub in self.subs else 0

    def has(self, sub):
        return sub in self.subs


def account_ref(body, default_type="cash"):
    return (body["customer"], body.get("account_type") or default_type, body.get("label") or "default")


_ACCOUNT_COLS = ("b.id, b.sub, b.balance_minor, a.id, a.customer_id, c.external_ref, a.type, a.label, "
                 "a.asset, a.debit_blocked, a.credit_blocked")


def _accounts_from_rows(rows):
    out = {}
    for bid, sub, bal, aid, cid, cref, atype, label, asset, dblk, cblk in rows:
        acct = out.get(aid)
        if acct is None:
            acct = out[aid] = Account(aid, cid, cref, atype, label, asset, bool(dblk), bool(cblk))
        acct.subs[sub] = [bid, int(bal)]
    return out


def lock_accounts(refs=(), account_ids=(), strict=True, shard_of=None):
    """Lock every sub-account row of the named accounts, in ascending row id, and return them.

    Customer balance rows are locked in one global order (ascending id), and a system shard row is only
    ever taken with SKIP LOCKED (``_pick_shard``), never waited for: no deadlocks between ledger writers
    (short of every shard being held at once, see ``_lock_free_shard``). On SQLite the write lock is
    already held (BEGIN IMMEDIATE).

    Args:
        refs: (customer external_ref, account type, label) triples.
        account_ids: account ids.
        strict: False locks whatever exists and returns it (no 404 for the missing).
        shard_of: optional ``(system code, asset)`` this transaction is about to post to: on PostgreSQL,
            outside a batch, the same statement also takes a free shard of it as ``_pick_shard`` would
            (SKIP LOCKED, so never a wait and never a deadlock) and notes it on the returned accounts
            (``Account.shard``); a posting with a leg on one of them uses that shard — one round trip
            fewer. A hint only: the posting picks a shard itself when none was taken.

    Returns:
        list of Account, in the order of ``refs`` then ``account_ids``.

    Raises:
        Problem 404 when a customer or account does not exist.
    """
    state = batch_state()
    if state is not None and strict:
        cached = state["accounts"]
        if all(r in cached for r in refs) and all(a in cached for a in account_ids):
            return [cached[r] for r in refs] + [cached[a] for a in account_ids]
    shard = None
    if shard_of is not None and state is None and is_postgres() and db.in_transaction():
        shard = (shard_of, *system_shards(*shard_of))
    accounts = _select_accounts(refs, account_ids, lock=True, shard=shard)
    if state is not None:
        # rows already locked by this transaction keep the (current) objects post() updates
        for aid in list(accounts):
            if aid in state["accounts"]:
                accounts[aid] = state["accounts"][aid]
        _cache(accounts.values())
    if not strict:
        return list(accounts.values())
    return _in_order(accounts, refs, account_ids)


def read_accounts(refs):
    """Like lock_accounts, without locking (reads, and resolving ids before locking lots)."""
    return _in_order(_select_accounts(refs, (), lock=False), refs, ())


def _select_accounts(refs, account_ids, lock, shard=None):
    """Every sub-account row of the named accounts, by account id (locked FOR UPDATE on PostgreSQL).

    ``shard``: ``((code, asset), account id, customer id, shard row ids)`` of a system account whose free
    shard the statement also takes (PostgreSQL, locking; see ``lock_accounts``), noted on every account
    returned (``Account.shard``) for the posting that uses them.
    """
    p = param()
    conds, params = [], []
    head, cols = "", _ACCOUNT_COLS
    if shard is not None:
        key, _aid, _cid, shard_ids = shard
        head = f"WITH s AS ({_shard_sql(len(shard_ids))}) "
        cols += ", (SELECT id FROM s)"
        params += [*shard_ids, _shard_hint(key, shard_ids)]
    for cref, atype, label in refs:
        conds.append(f"(c.external_ref = {p} AND a.type = {p} AND a.label = {p})")
        params += [cref, atype, label]
    if account_ids:
        conds.append(f"a.id IN ({placeholders(len(account_ids))})")
        params += list(account_ids)
    sql = (f"{head}SELECT {cols} FROM ledger_balance b JOIN ledger_account a ON a.id = b.account_id "
           f"JOIN ledger_customer c ON c.id = a.customer_id WHERE {' OR '.join(conds)} ORDER BY b.id")
    if lock and is_postgres():
        sql += " FOR UPDATE OF b"
    rows = db.execute_sql(sql, params).fetchall()
    if shard is None:
        return _accounts_from_rows(rows)
    accounts = _accounts_from_rows([r[:-1] for r in rows])
    taken = rows[0][-1] if rows else None
    if taken is not None:
        for acct in accounts.values():
            acct.shard = (shard[0], taken)
    return accounts


def _in_order(accounts, refs, account_ids):
    """The accounts named by ``refs`` then ``account_ids``, in that order; 404 for a missing one."""
    out = []
    for cref, atype, label in refs:
        match = next((a for a in accounts.values()
                      if a.customer == cref and a.type == atype and a.label == label), None)
        if match is None:
            _raise_missing(cref, atype, label)
        out.append(match)
    for aid in account_ids:
        if aid not in accounts:
            raise Problem(404, "account-not-found", "Account not found", f"account {aid} does not exist")
        out.append(accounts[aid])
    return out


def _raise_missing(cref, atype, label):
    if LedgerCustomer.get_or_none(LedgerCustomer.external_ref == cref) is None:
        raise Problem(404, "customer-not-found", "Customer not found", f"customer {cref!r} does not exist",
                      customer=cref)
    raise Problem(404, "account-not-found", "Account not found",
                  f"customer {cref!r} has no {atype!r} account labelled {label!r}",
                  customer=cref, account_type=atype, label=label)


def customer_account_for_asset(cref, asset):
    """(type, label) of the customer's default account holding a lot asset."""
    cfg = config()
    for atype, spec in cfg.account_types.items():
        if spec["asset"] == asset:
            return (cref, atype, "default")
    raise Problem(422, "unknown-asset", "Unknown asset", f"no account type holds asset {asset!r}")


def ensure_account(customer_id, atype, label, cfg):
    """Create the account and its sub-account rows if missing (idempotent, race-safe)."""
    spec = cfg.account_type(atype)
    LedgerAccount.insert(customer=customer_id, type=atype, label=label, asset=spec["asset"]) \
        .on_conflict_ignore().execute()
    acct = LedgerAccount.get((LedgerAccount.customer == customer_id) & (LedgerAccount.type == atype)
                             & (LedgerAccount.label == label) & (LedgerAccount.asset == spec["asset"]))
    subs = [s for s in CUSTOMER_SUBS if s in spec["sub_accounts"]]
    LedgerBalance.insert_many([{"account": acct.id, "sub": s, "shard": 0, "asset": spec["asset"]}
                               for s in subs]).on_conflict_ignore().execute()
    return acct


# --------------------------------------------------------------------------- system accounts

_system_cache = {}
_system_lock = threading.Lock()


def _db_key():
    obj = db.obj
    return (id(obj), getattr(obj, "database", None), str(getattr(obj, "connect_params", {}).get("options")))


def system_shards(code, asset):
    """(account id, customer id, shard row ids) of system account ``code`` for ``asset``.

    The system accounts are created on first use in a transaction of their own that commits before
    they are used (every system account of the policy at once, idempotently: ON CONFLICT DO NOTHING,
    in one order), and only committed rows are cached. A posting's transaction never creates them, so
    its rollback (a retried deadlock, a racing first posting) cannot leave the cache pointing at rows
    that no longer exist. PostgreSQL inside a caller's transaction: created on another connection
    (a short-lived thread), then read — committed — by this one. SQLite inside a transaction (one
    writer: no other connection may write now): created in this transaction and not cached until seen
    committed.
    """
    cfg = config()
    cfg.system_code(code, asset)
    key = (_db_key(), code, asset, cfg.shards)
    hit = _system_cache.get(key)
    if hit is not None:
        return hit
    found = _find_system(code, asset, cfg.shards)
    if found is None:
        if not db.in_transaction():
            _create_system_accounts(cfg)
        elif is_postgres():
            _create_system_accounts_elsewhere(cfg)
        else:
            _uncommitted_system()[key] = _outermost_transaction()
            return _ensure_system(code, asset, cfg.shards)
        found = _find_system(code, asset, cfg.shards)
        if found is None:  # a bug (or a REPEATABLE READ caller that cannot see the commit)
            raise RuntimeError(f"system account {code}/{asset} was created but is not visible")
    elif db.in_transaction() and _uncommitted_system().get(key) is _outermost_transaction():
        return found  # SQLite: this very transaction's own, uncommitted rows
    # Seen outside the transaction that created them: that one ended, and as the rows exist, committed.
    _uncommitted_system().pop(key, None)
    with _system_lock:
        _system_cache[key] = found
    return found


_local = threading.local()
_create_lock = threading.Lock()


def _uncommitted_system():
    """System account keys this thread created inside a transaction -> that (outermost) transaction."""
    keys = getattr(_local, "uncommitted_system", None)
    if keys is None:
        keys = _local.uncommitted_system = {}
    return keys


def _outermost_transaction():
    txns = db.obj._state.transactions
    return txns[0] if txns else None


def _create_system_accounts(cfg):
    """Every system account of the policy, with its shard rows, in its own (committed) transaction."""
    @transactional()
    def run():
        for code in sorted(cfg.system):
            for asset in sorted(cfg.system[code]):
                _ensure_system(code, asset, cfg.shards)
    run()


def _create_system_accounts_elsewhere(cfg):
    """PostgreSQL, inside a transaction: create the system accounts on another connection and commit."""
    errors = []

    def work():
        try:
            with db.connection_context():  # a connection of this thread, not the caller's
                _create_system_accounts(cfg)
        except Exception as exc:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(exc)

    with _create_lock:  # one creator per process at a time (each holds one pooled connection)
        worker = threading.Thread(target=work, name="ledger-system-accounts", daemon=True)
        worker.start()
        worker.join()
    if errors:
        raise errors[0]


def _find_system(code, asset, shards):
    rows = list(LedgerBalance.select(LedgerBalance.id, LedgerAccount.id.alias("aid"),
                                     LedgerAccount.customer.alias("cid"))
                .join(LedgerAccount).join(LedgerCustomer)
                .where((LedgerCustomer.external_ref == SYSTEM_CUSTOMER) & (LedgerAccount.type == code)
                       & (LedgerAccount.asset == asset) & (LedgerBalance.sub == SYSTEM_SUB)
                       & (LedgerBalance.shard < shards))
                .order_by(LedgerBalance.shard).dicts())
    if len(rows) != shards:
        return None
    return (rows[0]["aid"], rows[0]["cid"], [r["id"] for r in rows])


def _ensure_system(code, asset, shards):
    LedgerCustomer.insert(external_ref=SYSTEM_CUSTOMER, kind="system").on_conflict_ignore().execute()
    cust = LedgerCustomer.get(LedgerCustomer.external_ref == SYSTEM_CUSTOMER)
    LedgerAccount.insert(customer=cust.id, type=code, label=SYSTEM_LABEL, asset=asset, is_system=True) \
        .on_conflict_ignore().execute()
    acct = LedgerAccount.get((LedgerAccount.customer == cust.id) & (LedgerAccount.type == code)
                             & (LedgerAccount.label == SYSTEM_LABEL) & (LedgerAccount.asset == asset))
    LedgerBalance.insert_many([{"account": acct.id, "sub": SYSTEM_SUB, "shard": i, "asset": asset}
                               for i in range(shards)]).on_conflict_ignore().execute()
    return _find_system(code, asset, shards)


def ensure_system_accounts():
    """Create every system account of the active policy (committed before use, see system_shards)."""
    cfg = config()
    for code, assets in cfg.system.items():
        for asset in assets:
            system_shards(code, asset)


def clear_caches():
    with _system_lock:
        _system_cache.clear()
    policy.forget_derived("ledger.policy")


# --------------------------------------------------------------------------- posting

_batch = threading.local()


class batch_scope:
    """State of one long transaction (a batch): sticky shards, locked accounts, a write counter.

    - One shard per system account instead of a random one per posting: a batch spreading over every
      shard would hold them all until commit, and concurrent batches would wait on (or deadlock
      over) each other's shards.
    - Accounts locked once (in id order, before any item) are reused by later items without
      re-selecting them; their balances are kept current by post().
    - ``writes`` counts journals written, so the batch can tell whether a failing item wrote anything.
    """

    def __enter__(self):
        self.previous = getattr(_batch, "state", None)
        _batch.state = {"shards": {}, "held": set(), "accounts": {}, "writes": 0}
        return _batch.state

    def __exit__(self, *exc):
        _batch.state = self.previous
        return False


def batch_state():
    return getattr(_batch, "state", None)


def _cache(accounts):
    state = batch_state()
    if state is not None:
        for acct in accounts:
            state["accounts"][acct.id] = acct
            state["accounts"][(acct.customer, acct.type, acct.label)] = acct


def _pick_shard(code, asset, shard_ids, taken=None):
    """The shard of a system account this posting updates; on PostgreSQL, already locked by us.

    PostgreSQL: a shard is taken with ``FOR NO KEY UPDATE SKIP LOCKED`` — a shard held by another
    transaction is skipped, never waited for. A transaction holding a shard (until it commits) can
    then never be waited on by another for that shard, so shard rows can never be part of a
    deadlock cycle, however many postings a transaction makes and in whatever order it locks its
    customer rows afterwards. The transaction prefers the shard it (or, outside a batch, this thread)
    used last, so a multi-posting transaction holds one shard per system account, not one per posting.
    Only when every shard is held by other transactions does it wait (briefly retrying first).
    ``taken``: a shard this transaction already took with the accounts it posts on (``Account.shard``).
    """
    state = batch_state()
    hints = state["shards"] if state is not None else _thread_hints()
    key = (code, asset)
    if not is_postgres():  # SQLite: one writer, nothing to skip
        if state is None:
            return random.choice(shard_ids)
        if key not in hints:
            hints[key] = random.choice(shard_ids)
        return hints[key]
    if state is not None and key in state["held"]:
        return hints[key]  # taken earlier in this batch, which uses no savepoints: still ours until commit
    if state is None and taken in shard_ids:
        hints[key] = taken  # locked with the customer's rows by this transaction: held until it ends
        return taken
    hints[key] = _lock_free_shard(shard_ids, _shard_hint(key, shard_ids))
    if state is not None:
        state["held"].add(key)
    return hints[key]


SKIP_ATTEMPTS = 20


def _thread_hints():
    hints = getattr(_local, "shard_hints", None)
    if hints is None:
        hints = _local.shard_hints = {}
    return hints


_SHARD_SQL = {}


def _shard_sql(n):
    """PostgreSQL: take one of ``n`` shard rows no other transaction holds, the hinted one (last param) first."""
    sql = _SHARD_SQL.get(n)
    if sql is None:
        sql = _SHARD_SQL[n] = (
            f"SELECT id FROM ledger_balance WHERE id IN ({placeholders(n)}) "
            f"ORDER BY id = {param()} DESC, random() LIMIT 1 FOR NO KEY UPDATE SKIP LOCKED")
    return sql


def _shard_hint(key, shard_ids):
    """The shard this thread used last for ``key`` (a random one at first)."""
    hint = _thread_hints().get(key)
    return hint if hint in shard_ids else random.choice(shard_ids)


def _lock_free_shard(shard_ids, hint):
    sql = _shard_sql(len(shard_ids))
    for attempt in range(SKIP_ATTEMPTS):
        row = db.execute_sql(sql, [*shard_ids, hint]).fetchone()
        if row is not None:
            return row[0]
        time.sleep(0.0005 * (attempt + 1))
    # Every shard is held by another transaction (more concurrent holders than shards): wait for one.
    # Only here can a wait on a shard take part in a deadlock, which transactional() then retries.
    db.execute_sql(f"SELECT id FROM ledger_balance WHERE id = {param()} FOR NO KEY UPDATE", [hint])
    return hint


@dataclass
class Leg:
    account: object  # Account, or ("system", code)
    sub: str
    amount: int


@dataclass
class Ctx:
    """Who posts, under which key and policy."""
    op: str
    actor: str
    client: str
    key: str = None
    digest: str = None
    external_ref: str = None
    metadata: dict = None
    allow_blocked: bool = False
    at: dt.datetime = None  # the instant of the operation; None: app.platform.clock.now()

    def now(self):
        """The instant every time decision of this operation uses (never the wall clock directly)."""
        return self.at if self.at is not None else clock.now()


# No sub-account of a customer ever holds more than this (2**53 minor units: exact in every JSON
# client, and far from the 64-bit column's end, so no sum of postings can overflow it).
MAX_BALANCE_MINOR = 2**53


def _resolve_legs(ctx, jtype, legs):
    """Legs -> rows to post, with blocks and balance (sum zero per asset) checked; writes nothing
    except, on a system account's very first use, its shard rows."""
    legs = [leg for leg in legs if leg.amount != 0]
    if len(legs) < 2:
        raise Problem(422, "empty-posting", "Nothing to post", "a journal needs at least two non-zero entries")
    per_asset = {}
    resolved = []  # (balance_id, account_id, customer_id, sub, asset, amount, leg)
    for leg in legs:
        acct = leg.account
        if isinstance(acct, tuple):
            _, code, asset = acct
            aid, cid, shard_ids = system_shards(code, asset)
            taken = next((other.account.shard[1] for other in legs if not isinstance(other.account, tuple)
                          and other.account.shard and other.account.shard[0] == (code, asset)), None)
            resolved.append((_pick_shard(code, asset, shard_ids, taken), aid, cid, SYSTEM_SUB, asset, leg.amount,
                             leg))
        else:
            if not acct.has(leg.sub):
                raise Problem(422, "no-such-sub-account", "No such sub-account",
                              f"account {acct.name()} has no {leg.sub!r} sub-account")
            if not ctx.allow_blocked and leg.sub != "frozen":
                if leg.amount < 0 and acct.debit_blocked:
                    raise Problem(409, "account-blocked", "Account blocked",
                                  f"debits from {acct.name()} are blocked", account=acct.name(), block="debit")
                if leg.amount > 0 and acct.credit_blocked:
                    raise Problem(409, "account-blocked", "Account blocked",
                                  f"credits to {acct.name()} are blocked", account=acct.name(), block="credit")
            asset = acct.asset
            if leg.amount > 0 and acct.subs[leg.sub][1] + leg.amount > MAX_BALANCE_MINOR:
                raise Problem(422, "balance-limit-exceeded", "Balance limit exceeded",
                              f"{acct.name()}.{leg.sub} would hold more than {MAX_BALANCE_MINOR} minor units",
                              account=acct.name(), sub=leg.sub, limit=MAX_BALANCE_MINOR)
            resolved.append((acct.subs[leg.sub][0], acct.id, acct.customer_id, leg.sub, asset, leg.amount, leg))
        per_asset[asset] = per_asset.get(asset, 0) + leg.amount
    if any(per_asset.values()):
        raise RuntimeError(f"unbalanced journal {jtype}: {per_asset}")  # a bug, never a client error
    return resolved


def post(ctx, jtype, legs, rule=None, extra=None):
    """Write one journal: check blocks, apply every leg to its snapshot row, append the entries.

    Customer legs must belong to accounts already locked by lock_accounts() and already checked for
    funds by the caller. System legs pick a random shard and are never balance-checked, so postings
    against a hot platform account spread over ``shards`` rows instead of queueing on one.

    Args:
        extra: optional ``(table, {column: value})`` row written with the journal (its ``journal_id``
            filled in), e.g. a consume's refund counter row.

    Returns:
        the journal as a dict (with its entries).
    """
    resolved = _resolve_legs(ctx, jtype, legs)
    now = ctx.now()
    version = policy_version()
    meta = json.dumps(ctx.metadata, ensure_ascii=False, separators=(",", ":")) if ctx.metadata else None
    journal_row = [jtype, ctx.client, ctx.key, ctx.external_ref, ctx.digest, version, rule, ctx.actor, meta, now]
    jid, after = _writer(resolved)(journal_row, resolved, now, extra)
    state = batch_state()
    if state is not None:
        state["writes"] += 1
    entries = []
    for (bid, aid, cid, sub, asset, amount, leg), balance_after in zip(resolved, after):
        entries.append(_entry_dict(leg, aid, sub, asset, amount, balance_after))
        if not isinstance(leg.account, tuple):
            leg.account.subs[sub][1] = balance_after  # keep the (batch-cached) view current
    return journal_dict_of(jid, jtype, ctx, version, rule, now, entries)


def journal_dict_of(jid, jtype, ctx, version, rule, now, entries):
    """The journal as every operation returns it (one shape for single, batched and bulk postings)."""
    return {"id": jid, "type": jtype, "external_ref": ctx.external_ref, "idempotency_key": ctx.key,
            "policy_version": version, "rule": rule, "actor": ctx.actor, "metadata": ctx.metadata,
            "created_at": iso(now), "entries": entries}


def writers():
    """The posting writers the bound engine can use (contract tests run every one of them)."""
    return [_write_one_statement, _write_statements] if is_postgres() else [_write_statements]


def _writer(resolved):
    """The engine-specific writer of one posting: ``(journal_row, resolved, now, extra) -> (journal id,
    balance_after per leg)``. PostgreSQL writes a posting whose legs hit distinct rows in one statement;
    otherwise (SQLite, or two legs on one row) the portable statements."""
    if is_postgres() and len({r[0] for r in resolved}) == len(resolved):
        return _write_one_statement
    return _write_statements


def _write_statements(journal_row, resolved, now, extra=None):
    """Portable: journal (RETURNING id), the extra row, the snapshot UPDATE (RETURNING), the entries."""
    p = param()
    # Raw SQL on the hot path: peewee's query builder costs more than the round trip here.
    jid = db.execute_sql(
        "INSERT INTO ledger_journal (type, client, idempotency_key, external_ref, request_digest, policy_version, "
        f"rule, actor, metadata, created_at) VALUES ({placeholders(10)}) RETURNING id",
        journal_row).fetchone()[0]
    if extra:
        table, row = extra
        db.execute_sql(f"INSERT INTO {table} (journal_id, {', '.join(row)}) VALUES ({placeholders(len(row) + 1)})",
                       [jid, *row.values()])
    deltas = {}
    for bid, *_rest in resolved:
        deltas[bid] = deltas.get(bid, 0) + _rest[4]
    ids = sorted(deltas)
    case = " ".join(f"WHEN {p} THEN {p}" for _ in ids)
    params = [x for bid in ids for x in (bid, deltas[bid])] + ids
    cur = db.execute_sql(
        f"UPDATE ledger_balance SET balance_minor = balance_minor + (CASE id {case} ELSE 0 END) "
        f"WHERE id IN ({placeholders(len(ids))}) RETURNING id, balance_minor", params)
    running = {bid: int(bal) - deltas[bid] for bid, bal in cur.fetchall()}
    rows, after = [], []
    for bid, aid, cid, sub, asset, amount, leg in resolved:
        running[bid] += amount
        rows += [jid, bid, aid, cid, sub, asset, amount, running[bid], now]
        after.append(running[bid])
    values = ", ".join([f"({placeholders(9)})"] * len(resolved))
    db.execute_sql("INSERT INTO ledger_entry (journal_id, balance_id, account_id, customer_id, sub, asset, amount_minor, "
                   f"balance_after_minor, created_at) VALUES {values}", rows)
    return jid, after


def _entry_dict(leg, aid, sub, asset, amount, after):
    if isinstance(leg.account, tuple):
        owner = {"customer": None, "account_type": leg.account[1], "label": SYSTEM_LABEL, "system": True}
    else:
        owner = leg.account.ref()
    return {"account_id": aid, **owner, "sub": sub, "asset": asset, "amount": amount, "balance_after": after}


def _write_one_statement(journal_row, resolved, now, extra=None):
    """PostgreSQL: journal, snapshot updates and entries in ONE statement (data-modifying CTEs).

    Only when every leg hits a distinct row (then each entry's balance_after is its row's new value).
    The UPDATE takes the row locks before the entries get their ids, so per row, entry order is
    still lock order. The statement text is built once per shape (legs, extra row's columns).
    """
    shape = (len(resolved), extra[0] if extra else None, tuple(extra[1]) if extra else None)
    sql = _POST_SQL.get(shape)
    if sql is None:
        legs = ", ".join(["(%s::bigint, %s::bigint, %s::bigint, %s, %s, %s::bigint)"] * len(resolved))
        case = " ".join(["WHEN %s THEN %s::bigint"] * len(resolved))
        ids = ", ".join(["%s"] * len(resolved))
        sql = (
            "WITH j AS (INSERT INTO ledger_journal (type, client, idempotency_key, external_ref, request_digest, "
            "policy_version, rule, actor, metadata, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
            "RETURNING id), "
            f"u AS (UPDATE ledger_balance SET balance_minor = balance_minor + (CASE id {case} ELSE 0 END) "
            f"WHERE id IN ({ids}) RETURNING id, balance_minor), "
            "e AS (INSERT INTO ledger_entry (journal_id, balance_id, account_id, customer_id, sub, asset, "
            "amount_minor, balance_after_minor, created_at) SELECT j.id, u.id, v.aid, v.cid, v.sub, v.asset, "
            f"v.amount, u.balance_minor, %s FROM j CROSS JOIN u JOIN (VALUES {legs}) "
            "AS v(bid, aid, cid, sub, asset, amount) ON v.bid = u.id) ")
        if extra:
            table, row = extra
            sql += (f", x AS (INSERT INTO {table} (journal_id, {', '.join(row)}) "
                    f"SELECT j.id, {', '.join(['%s'] * len(row))} FROM j) ")
        sql += "SELECT j.id, u.id, u.balance_minor FROM j CROSS JOIN u"
        _POST_SQL[shape] = sql
    params = list(journal_row)
    params += [x for r in resolved for x in (r[0], r[5])]
    params += [r[0] for r in resolved]
    params.append(now)
    params += [x for r in resolved for x in (r[0], r[1], r[2], r[3], r[4], r[5])]
    if extra:
        params += list(extra[1].values())
    rows = db.execute_sql(sql, params).fetchall()
    if len(rows) != len(resolved):
        raise RuntimeError(f"posting touched {len(rows)} rows, expected {len(resolved)}")  # a bug
    after = {bid: int(bal) for _, bid, bal in rows}
    return rows[0][0], [after[r[0]] for r in resolved]


_POST_SQL = {}


def system(code, asset):
    return ("system", code, asset)


class _Pending:
    """One journal decided in a batch, written at the next flush."""

    def __init__(self, ctx, jtype, rule, extra, resolved, now, version):
        self.ctx, self.jtype, self.rule, self.extra, self.resolved = ctx, jtype, rule, extra, resolved
        self.now, self.version = now, version
        self.after = [None] * len(resolved)
        self.id = None

    def journal(self):
        entries = [_entry_dict(leg, aid, sub, asset, amount, self.after[k])
                   for k, (bid, aid, cid, sub, asset, amount, leg) in enumerate(self.resolved)]
        return journal_dict_of(self.id, self.jtype, self.ctx, self.version, self.rule, self.now, entries)


class BulkWriter:
    """PostgreSQL, inside a batch: journals decided one by one, written a run at a time.

    ``add`` checks and applies a journal to the batch's locked, cached customer rows (so the next
    decision sees it) and writes nothing; ``flush`` writes every pending journal, the snapshot
    updates, the entries and the extra rows with a handful of multi-row statements. Ids come from
    the sequences up front, so entries of one row are numbered in the order they were applied and
    each balance_after is exact.
    """

    def __init__(self):
        self.pending = []

    def add(self, ctx, jtype, legs, rule=None, extra=None):
        resolved = _resolve_legs(ctx, jtype, legs)
        if len({r[0] for r in resolved}) != len(resolved):
            raise RuntimeError("bulk postings need distinct rows per journal")  # callers post consumes only
        item = _Pending(ctx, jtype, rule, extra, resolved, ctx.now(), policy_version())
        for k, (bid, aid, cid, sub, asset, amount, leg) in enumerate(resolved):
            if not isinstance(leg.account, tuple):
                leg.account.subs[sub][1] += amount
                item.after[k] = leg.account.subs[sub][1]
        self.pending.append(item)
        return item

    def flush(self):
        pending, self.pending = self.pending, []
        if not pending:
            return
        n_entries = sum(len(p.resolved) for p in pending)
        jids = sorted(r[0] for r in db.execute_sql(
            "SELECT nextval('ledger_journal_id_seq') FROM generate_series(1, %s)", [len(pending)]).fetchall())
        eids = sorted(r[0] for r in db.execute_sql(
            "SELECT nextval('ledger_entry_id_seq') FROM generate_series(1, %s)", [n_entries]).fetchall())
        rows = []
        for p, jid in zip(pending, jids):
            p.id = jid
            meta = json.dumps(p.ctx.metadata, ensure_ascii=False, separators=(",", ":")) if p.ctx.metadata else None
            rows += [jid, p.jtype, p.ctx.client, p.ctx.key, p.ctx.external_ref, p.ctx.digest, p.version, p.rule,
                     p.ctx.actor, meta, p.now]
        db.execute_sql("INSERT INTO ledger_journal (id, type, client, idempotency_key, external_ref, request_digest, "
                       "policy_version, rule, actor, metadata, created_at) VALUES "
                       + ", ".join(["(" + placeholders(11) + ")"] * len(pending)), rows)
        deltas = {}
        for p in pending:
            for bid, aid, cid, sub, asset, amount, leg in p.resolved:
                deltas[bid] = deltas.get(bid, 0) + amount
        ids = sorted(deltas)
        case = " ".join(["WHEN %s THEN %s::bigint"] * len(ids))
        final = dict(db.execute_sql(
            f"UPDATE ledger_balance SET balance_minor = balance_minor + (CASE id {case} ELSE 0 END) "
            f"WHERE id IN ({placeholders(len(ids))}) RETURNING id, balance_minor",
            [x for b in ids for x in (b, deltas[b])] + ids).fetchall())
        running = {bid: int(final[bid]) - deltas[bid] for bid in ids}
        entry_rows, eid = [], iter(eids)
        for p in pending:
            for k, (bid, aid, cid, sub, asset, amount, leg) in enumerate(p.resolved):
                running[bid] += amount
                if p.after[k] is None:
                    p.after[k] = running[bid]
                elif p.after[k] != running[bid]:
                    raise RuntimeError(f"bulk posting out of step on row {bid}")  # a bug: abort the batch
                entry_rows += [next(eid), p.id, bid, aid, cid, sub, asset, amount, running[bid], p.now]
        db.execute_sql("INSERT INTO ledger_entry (id, journal_id, balance_id, account_id, customer_id, sub, asset, "
                       "amount_minor, balance_after_minor, created_at) VALUES "
                       + ", ".join(["(" + placeholders(10) + ")"] * n_entries), entry_rows)
        by_table = {}
        for p in pending:
            if p.extra:
                table, row = p.extra
                by_table.setdefault((table, tuple(row)), []).append([p.id, *row.values()])
        for (table, cols), values in by_table.items():
            db.execute_sql(f"INSERT INTO {table} (journal_id, {', '.join(cols)}) VALUES "
                           + ", ".join(["(" + placeholders(len(cols) + 1) + ")"] * len(values)),
                           [x for v in values for x in v])
        state = batch_state()
        if state is not None:
            state["writes"] += len(pending)


def journal_dict(journal_id):
    """One journal with its entries, or 404."""
    j = LedgerJournal.get_or_none(LedgerJournal.id == journal_id)
    if j is None:
        raise Problem(404, "journal-not-found", "Journal not found", f"journal {journal_id} does not exist")
    q = (LedgerEntry.select(LedgerEntry, LedgerAccount.type, LedgerAccount.label, LedgerAccount.is_system,
                            LedgerCustomer.external_ref)
         .join(LedgerAccount, on=(LedgerEntry.account == LedgerAccount.id))
         .join(LedgerCustomer, pw.JOIN.LEFT_OUTER, on=(LedgerAccount.customer == LedgerCustomer.id))
         .where(LedgerEntry.journal == journal_id).order_by(LedgerEntry.id).dicts())
    entries = []
    for e in q:
        system_acct = bool(e["is_system"])
        entries.append({"account_id": e["account"], "customer": None if system_acct else e["external_ref"],
                        "account_type": e["type"], "label": e["label"],
                        **({"system": True} if system_acct else {}),
                        "sub": e["sub"], "asset": e["asset"], "amount": e["amount_minor"],
                        "balance_after": e["balance_after_minor"]})
    return {"id": j.id, "type": j.type, "external_ref": j.external_ref, "idempotency_key": j.idempotency_key,
            "policy_version": j.policy_version, "rule": j.rule, "actor": j.actor,
            "metadata": json.loads(j.metadata) if j.metadata else None, "created_at": iso(j.created_at),
            "entries": entries}
