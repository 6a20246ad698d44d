"""Membership storage: members, stored events, growth journal, level changes, caps, points awards, plans."""
import peewee as pw

from app.platform import clock
from app.db import BaseModel



class Member(BaseModel):
    """Snapshot row per member; the growth value here always equals the sum of its growth entries."""
    member_ref = pw.CharField(max_length=100, unique=True)
    joined_at = pw.DateTimeField(default=clock.now)
    growth = pw.BigIntegerField(default=0)
    level = pw.CharField(max_length=50)
    level_since = pw.DateTimeField(default=clock.now)
    level_valid_until = pw.DateTimeField(null=True)  # no demotion before this instant (policy option)
    updated_at = pw.DateTimeField(default=clock.now)


class MemberEvent(BaseModel):
    """Every accepted member event, verbatim: idempotency by event_id and the input of simulations."""
    event_id = pw.CharField(max_length=100, unique=True)
    member_ref = pw.CharField(max_length=100, index=True)
    type = pw.CharField(max_length=50)
    occurred_at = pw.DateTimeField(index=True)
    amount_fen = pw.BigIntegerField(null=True)
    order_ref = pw.CharField(max_length=100, null=True, index=True)
    channel = pw.CharField(max_length=50, null=True)
    body = pw.TextField()  # canonical JSON of the request item
    digest = pw.CharField(max_length=64)
    paid_at_event = pw.BooleanField(default=False)  # for KPIs: paid members' share of GMV
    policy_version = pw.CharField(max_length=64, null=True)
    result = pw.TextField()  # JSON returned to the caller (replayed verbatim)
    received_at = pw.DateTimeField(default=clock.now)


class GrowthEntry(BaseModel):
    """Append-only growth journal: every change with its reason, rule and policy version."""
    member_ref = pw.CharField(max_length=100, index=True)
    entry_key = pw.CharField(max_length=200, unique=True)  # makes every change exactly-once
    kind = pw.CharField(max_length=20)  # earn | clawback | deduct
    delta = pw.BigIntegerField()
    balance_after = pw.BigIntegerField()
    cut = pw.BigIntegerField(default=0)  # how much a cap removed
    event_id = pw.CharField(max_length=100, null=True, index=True)
    order_ref = pw.CharField(max_length=100, null=True, index=True)
    rule = pw.CharField(max_length=200)
    policy_version = pw.CharField(max_length=64)
    reason = pw.TextField()
    at = pw.DateTimeField(index=True)  # business time of the cause
    created_at = pw.DateTimeField(default=clock.now)


class LevelChange(BaseModel):
    """Level transitions (promotion/demotion) with the reason and the rule that decided them."""
    member_ref = pw.CharField(max_length=100, index=True)
    from_level = pw.CharField(max_length=50, null=True)
    to_level = pw.CharField(max_length=50)
    growth = pw.BigIntegerField()
    reason = pw.TextField()
    rule = pw.CharField(max_length=200)
    policy_version = pw.CharField(max_length=64)
    event_id = pw.CharField(max_length=100, null=True)
    at = pw.DateTimeField(index=True)
    created_at = pw.DateTimeField(default=clock.now)


class CapCounter(BaseModel):
    """Usage per cap window (member or global scope); the row is locked while a cap is checked."""
    scope = pw.CharField(max_length=100)  # member_ref or "*" for global budgets
    cap = pw.CharField(max_length=200)  # e.g. growth:sign_in, points:sign_in_daily
    window = pw.CharField(max_length=20)  # 2026-11-26, 2026-W48, 2026-11
    amount = pw.BigIntegerField(default=0)
    count = pw.IntegerField(default=0)

    class Meta:
        indexes = ((("scope", "cap", "window"), True),)


class PointsAward(BaseModel):
    """Explanation of every points movement this context caused (the balance itself is in the ledger)."""
    member_ref = pw.CharField(max_length=100, index=True)
    entry_key = pw.CharField(max_length=200, unique=True)
    kind = pw.CharField(max_length=20)  # earn | clawback | redeem
    points = pw.BigIntegerField()  # signed: + earned, - clawed back / redeemed
    cut = pw.BigIntegerField(default=0)
    cuts = pw.TextField(default="[]")  # JSON list of {cap, cut}
    event_id = pw.CharField(max_length=100, null=True, index=True)
    order_ref = pw.CharField(max_length=100, null=True, index=True)
    rule = pw.CharField(max_length=200)
    policy_version = pw.CharField(max_length=64)
    reason = pw.TextField()
    expires_at = pw.DateTimeField(null=True)
    journal = pw.CharField(max_length=100, null=True)  # ledger journal id
    at = pw.DateTimeField(index=True)
    created_at = pw.DateTimeField(default=clock.now)


class Redemption(BaseModel):
    """A points redemption request: done, held for review, approved or rejected."""
    redemption_id = pw.CharField(max_length=100, unique=True)
    member_ref = pw.CharField(max_length=100, index=True)
    points = pw.BigIntegerField()
    purpose = pw.CharField(max_length=200, null=True)
    status = pw.CharField(max_length=20)  # done | held | rejected
    reason = pw.TextField(null=True)
    policy_version = pw.CharField(max_length=64)
    journal = pw.CharField(max_length=100, null=True)
    at = pw.DateTimeField(index=True)
    decided_at = pw.DateTimeField(null=True)
    decided_by = pw.CharField(max_length=200, null=True)


class Subscription(BaseModel):
    """A member's paid plan; paid status at t is decided by its paid periods, not by this row."""
    member_ref = pw.CharField(max_length=100, index=True)
    plan = pw.CharField(max_length=50)
    status = pw.CharField(max_length=20)  # active | cancelled | lapsed | expired
    auto_renew = pw.BooleanField(default=True)
    current_start = pw.DateTimeField()
    current_end = pw.DateTimeField(index=True)
    renew_attempts = pw.IntegerField(default=0)
    next_attempt_at = pw.DateTimeField(null=True, index=True)
    last_failure = pw.TextField(null=True)
    policy_version = pw.CharField(max_length=64)
    created_at = pw.DateTimeField(default=clock.now)
    ended_at = pw.DateTimeField(null=True)


class PlanPeriod(BaseModel):
    """One paid period [start, end) of a subscription with the payment behind it."""
    subscription = pw.ForeignKeyField(Subscription, backref="periods", on_delete="CASCADE")
    member_ref = pw.CharField(max_length=100, index=True)
    plan = pw.CharField(max_length=50)
    start = pw.DateTimeField()
    end = pw.DateTimeField()
    price_fen = pw.BigIntegerField()
    payment = pw.CharField(max_length=20)  # balance | external
    payment_ref = pw.CharField(max_length=200, null=True)
    journal = pw.CharField(max_length=100, null=True)
    kind = pw.CharField(max_length=20)  # subscribe | renew
    policy_version = pw.CharField(max_length=64)
    created_at = pw.DateTimeField(default=clock.now)

    class Meta:
        indexes = ((("subscription", "start"), True), (("member_ref", "start", "end"), False))


class CouponGrant(BaseModel):
    """Monthly coupon benefits issued (as ledger voucher lots), once per member, benefit and month."""
    member_ref = pw.CharField(max_length=100)
    benefit = pw.CharField(max_length=100)
    month = pw.CharField(max_length=7)
    amount_fen = pw.BigIntegerField()
    count = pw.IntegerField()
    source = pw.CharField(max_length=100)  # level:<name> | plan:<code>
    policy_version = pw.CharField(max_length=64)
    journal = pw.CharField(max_length=100, null=True)
    created_at = pw.DateTimeField(default=clock.now)

    class Meta:
        indexes = ((("member_ref", "benefit", "month"), True),)


class CashbackAward(BaseModel):
    """Cashback benefit credited (or clawed back) on an order, into the ledger's cashback sub-account."""
    member_ref = pw.CharField(max_length=100, index=True)
    entry_key = pw.CharField(max_length=200, unique=True)
    kind = pw.CharField(max_length=20)  # earn | clawback
    amount_fen = pw.BigIntegerField()  # signed
    cut = pw.BigIntegerField(default=0)
    event_id = pw.CharField(max_length=100, index=True)
    order_ref = pw.CharField(max_length=100, index=True)
    rule = pw.CharField(max_length=200)
    policy_version = pw.CharField(max_length=64)
    reason = pw.TextField()
    journal = pw.CharField(max_length=100, null=True)
    at = pw.DateTimeField(index=True)
    created_at = pw.DateTimeField(default=clock.now)


MODELS = [Member, MemberEvent, GrowthEntry, LevelChange, CapCounter, PointsAward, Redemption,
          Subscription, PlanPeriod, CouponGrant]
MODELS_0301 = [CashbackAward]
