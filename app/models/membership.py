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


class MallStock(BaseModel):
    """Units of a mall item sold (stock itself is policy); taken by a conditional UPDATE, never oversold."""
    item = pw.CharField(max_length=60, unique=True)
    sold = pw.IntegerField(default=0)


class MallRedemption(BaseModel):
    """A points-mall redemption: the points spend and what it issued (lot, benefit or fulfilment)."""
    redemption_id = pw.CharField(max_length=100, unique=True)
    member_ref = pw.CharField(max_length=100, index=True)
    item = pw.CharField(max_length=60)
    item_type = pw.CharField(max_length=20)  # voucher | red_packet | service | goods
    points = pw.BigIntegerField()
    status = pw.CharField(max_length=20)  # issued | pending_fulfilment | fulfilled | cancelled
    spend_journal = pw.IntegerField(null=True)  # the ledger's recorded lot spend of the points
    issued = pw.TextField(default="{}")  # JSON: voucher id / benefit grant / fulfilment
    rule = pw.CharField(max_length=200)
    policy_version = pw.CharField(max_length=64)
    reason = pw.TextField(null=True)
    at = pw.DateTimeField()
    decided_at = pw.DateTimeField(null=True)
    decided_by = pw.CharField(max_length=200, null=True)


class MemberVoucher(BaseModel):
    """A voucher or red packet a member holds: its ledger lot plus what the lot cannot say (threshold, categories)."""
    member_ref = pw.CharField(max_length=100, index=True)
    kind = pw.CharField(max_length=20)  # voucher | red_packet
    asset = pw.CharField(max_length=20)
    lot_id = pw.IntegerField(unique=True)
    amount_fen = pw.BigIntegerField()
    min_order_fen = pw.BigIntegerField(default=0)
    categories = pw.TextField(null=True)  # JSON list, NULL: any
    name = pw.CharField(max_length=100)
    source = pw.CharField(max_length=200)  # mall:<item> | benefit:<name>
    source_ref = pw.CharField(max_length=200, null=True)
    expires_at = pw.DateTimeField(null=True)
    at = pw.DateTimeField()


class BenefitGrant(BaseModel):
    """A benefit in force for a while outside level and plan (e.g. a service bought in the mall)."""
    member_ref = pw.CharField(max_length=100, index=True)
    benefit = pw.CharField(max_length=100)
    source = pw.CharField(max_length=200)
    starts_at = pw.DateTimeField()
    ends_at = pw.DateTimeField()


class MemberOrder(BaseModel):
    """An order paid through membership checkout: what each instrument paid, refunded so far."""
    member_ref = pw.CharField(max_length=100, index=True)
    order_ref = pw.CharField(max_length=100)
    total_fen = pw.BigIntegerField()  # payable after member discounts and fee waivers
    refunded_fen = pw.BigIntegerField(default=0)
    parts = pw.TextField()  # JSON list: [{instrument, units, value_fen, journal, voucher_id, refunded_units}]
    quote = pw.TextField()  # JSON: the checkout it was paid from
    policy_version = pw.CharField(max_length=64)
    at = pw.DateTimeField()

    class Meta:
        indexes = ((("member_ref", "order_ref"), True),)


class OrderRefund(BaseModel):
    """One refund of a paid order (idempotent by refund_id) with what went back where."""
    refund_id = pw.CharField(max_length=100, unique=True)
    member_ref = pw.CharField(max_length=100, index=True)
    order_ref = pw.CharField(max_length=100)
    amount_fen = pw.BigIntegerField()
    result = pw.TextField()
    policy_version = pw.CharField(max_length=64)
    at = pw.DateTimeField()


class MemberProfile(BaseModel):
    """Basic profile for the member center; the phone is personal data, masked in every response and log."""
    member_ref = pw.CharField(max_length=100, unique=True)
    nickname = pw.CharField(max_length=100, null=True)
    phone = pw.CharField(max_length=30, null=True)
    updated_at = pw.DateTimeField(default=clock.now)


MODELS_0302 = [MallStock, MallRedemption, MemberVoucher, BenefitGrant, MemberOrder, OrderRefund, MemberProfile]
