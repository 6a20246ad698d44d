"""Where the membership decisions read and write member state.

The decision code (growth, points, cashback, levels, deductions, late events, redemptions, paid plans) is
written once, against the methods of a *state*; it never runs SQL itself. ``LIVE`` is the live database
(the rows, the ledger, the decision log); the simulation passes its in-memory state
(``app.services.simulation.memory.MemoryState``) to the very same functions. A method here says what the
decisions need, not how the tables look: add one to both states, never a shortcut in a decision.
"""
import json
from types import SimpleNamespace

import peewee as pw

from app.db import db, for_update, is_postgres
from app.models.membership import (CapCounter, CashbackAward, GrowthEntry, LevelChange, Member, MemberEvent,
                                   PlanPeriod, PointsAward, Redemption, Subscription)
from app.platform import clock
from app.platform import sql as fastsql
from app.platform import timefmt
from app.services.membership import ledger_port as ml
from app.services.membership import policy as mp

LIVE_SUBSCRIPTION = ("active", "cancelled")


def _json(value, sort_keys=False):
    return json.dumps(value, sort_keys=sort_keys, separators=(",", ":"), ensure_ascii=False)


def canonical(event):
    """An event body as stored: compact JSON, keys sorted."""
    return _json(event, sort_keys=True)


class Counter:
    """The columns of a cap counter the cap logic reads."""
    __slots__ = ("id", "amount", "count")

    def __init__(self, id, amount, count):
        self.id, self.amount, self.count = id, amount, count


_MEMBER_FIELDS = [Member._meta.fields[n] for n in
                  ("id", "member_ref", "joined_at", "growth", "level", "level_since", "level_valid_until",
                   "updated_at")]


class LiveState:
    """The live database. Every method runs in the caller's transaction."""

    live = True
    # Whether ``decision`` writes to the decision log: the decision code builds a decision's inputs and outcome
    # only then (a simulation's state keeps no log and would throw them away on every event).
    keeps_decisions = True

    # ---- members ----------------------------------------------------------------------------

    def member(self, cfg, member_ref, at):
        """The member row, created on first sight and locked (FOR UPDATE) for the rest of the transaction.

        Locking the member serialises all changes of one member, which is what makes per-member caps
        exact under concurrent requests. Plain cached SQL: this runs on every event.
        """
        row = self._select_member(member_ref)
        if row is None:
            Member.insert(member_ref=member_ref, joined_at=at, growth=0, level=cfg.levels[0]["name"],
                          level_since=at, updated_at=clock.now()).on_conflict_ignore().execute()
            row = self._select_member(member_ref)
        return Member(**{f.name: f.python_value(v) for f, v in zip(_MEMBER_FIELDS, row)})

    @staticmethod
    def _select_member(member_ref):
        p = db.obj.param
        cols = ", ".join(f'"{f.column_name}"' for f in _MEMBER_FIELDS)
        lock = " FOR UPDATE" if is_postgres() else ""
        return db.execute_sql(f'SELECT {cols} FROM "member" WHERE "member_ref" = {p}{lock}', (member_ref,)).fetchone()

    def existing_member(self, member_ref):
        """The member row locked, or None."""
        return for_update(Member.select().where(Member.member_ref == member_ref)).get_or_none()

    def member_refs(self):
        """Every member reference, in id order (batched)."""
        last_id = 0
        while True:
            rows = list(Member.select(Member.id, Member.member_ref).where(Member.id > last_id)
                        .order_by(Member.id).limit(500).tuples())
            if not rows:
                return
            for mid, ref in rows:
                last_id = mid
                yield ref

    def save_member(self, member):
        p = db.obj.param
        f = Member._meta.fields
        fastsql.statement(f'UPDATE "member" SET "growth" = {p}, "level" = {p}, "level_since" = {p}, '
                          f'"level_valid_until" = {p}, "updated_at" = {p} WHERE "id" = {p}',
                          (member.growth, member.level, f["level_since"].db_value(member.level_since),
                           f["level_valid_until"].db_value(member.level_valid_until),
                           f["updated_at"].db_value(clock.now()), member.id))

    def level_change(self, values):
        LevelChange.create(**values)

    def decision(self, ruleset, version, rule, subject, inputs, outcome):
        return mp.record_decision(ruleset, version, rule, subject, inputs, outcome)

    # ---- caps ---------------------------------------------------------------------------------

    def counter(self, scope, cap, window, lock=True):
        """The usage counter of (scope, cap, window), created if missing and locked when asked (plain SQL: hot path)."""
        p = db.obj.param
        sql = (f'SELECT "id", "amount", "count" FROM "cap_counter" WHERE "scope" = {p} AND "cap" = {p} '
               f'AND "window" = {p}' + (" FOR UPDATE" if lock and is_postgres() else ""))
        args = (scope, cap, window)
        row = db.execute_sql(sql, args).fetchone()
        if row is None:
            CapCounter.insert(scope=scope, cap=cap, window=window, amount=0, count=0).on_conflict_ignore().execute()
            row = db.execute_sql(sql, args).fetchone()
        return Counter(row[0], int(row[1]), int(row[2]))

    def charge(self, rows, amount, count=1):
        p = db.obj.param
        for row in rows:
            db.execute_sql(f'UPDATE "cap_counter" SET "amount" = "amount" + {p}, "count" = "count" + {p} '
                           f'WHERE "id" = {p}', (amount, count, row.id))

    # ---- events and orders --------------------------------------------------------------------

    def stored_event(self, event_id):
        """The stored event's (event_id, digest, result), or None (only what a replay needs)."""
        row = fastsql.select_one(MemberEvent, ("event_id", "digest", "result"), {"event_id": event_id})
        return None if row is None else SimpleNamespace(event_id=row[0], digest=row[1], result=row[2])

    def store_event(self, event, digest, at, paid, version, result):
        """The event verbatim (simulation input, replays by event id) with the result it got."""
        fastsql.insert_later(MemberEvent, dict(
            event_id=event["event_id"], member_ref=event["member_id"], type=event["type"], occurred_at=at,
            amount_fen=event.get("amount_fen"), order_ref=event.get("order_ref"), channel=event.get("channel"),
            body=canonical(event), digest=digest, paid_at_event=paid, policy_version=version,
            result=_json(result)))

    def update_event_result(self, event_id, result):
        MemberEvent.update(result=_json(result)).where(MemberEvent.event_id == event_id).execute()

    def order_totals(self, order_ref, member_ref):
        """(paid_fen, refunded_fen) of an order from the stored events of the member."""
        rows = (MemberEvent.select(MemberEvent.type, pw.fn.SUM(MemberEvent.amount_fen))
                .where((MemberEvent.order_ref == order_ref) & (MemberEvent.member_ref == member_ref))
                .group_by(MemberEvent.type).tuples())
        totals = dict(rows)
        return int(totals.get("order_paid") or 0), int(totals.get("order_refunded") or 0)

    # ---- growth journal -----------------------------------------------------------------------

    def growth_entry(self, values):
        fastsql.insert_later(GrowthEntry, values)

    def growth_of_order(self, member_ref, order_ref):
        """(earned, already clawed back incl. what the floor cut) of an order's growth."""
        base = (GrowthEntry.member_ref == member_ref) & (GrowthEntry.order_ref == order_ref)
        earned = GrowthEntry.select(pw.fn.SUM(GrowthEntry.delta)).where(base & (GrowthEntry.kind == "earn")).scalar()
        already = GrowthEntry.select(pw.fn.SUM(GrowthEntry.cut - GrowthEntry.delta)).where(
            base & (GrowthEntry.kind == "clawback")).scalar()
        return int(earned or 0), int(already or 0)

    def last_deduction(self, member_ref):
        """When the member's latest periodic deduction was booked (closes the period), or None."""
        return (GrowthEntry.select(pw.fn.MAX(GrowthEntry.at))
                .where((GrowthEntry.member_ref == member_ref) & (GrowthEntry.kind == "deduct")).scalar())

    def has_growth_entry(self, entry_key):
        return GrowthEntry.select().where(GrowthEntry.entry_key == entry_key).exists()

    def earned_between(self, member_ref, start, end):
        return int((GrowthEntry.select(pw.fn.SUM(GrowthEntry.delta))
                    .where((GrowthEntry.member_ref == member_ref) & (GrowthEntry.kind.in_(["earn", "clawback"]))
                           & (GrowthEntry.at >= start) & (GrowthEntry.at < end)).scalar()) or 0)

    # ---- points -------------------------------------------------------------------------------

    def points_award(self, values, later=True):
        if "cuts" in values:
            values = dict(values, cuts=json.dumps(values["cuts"]))
        if later:
            fastsql.insert_later(PointsAward, values)
        else:
            PointsAward.create(**values)

    def points_of_order(self, member_ref, order_ref):
        """(earned, already clawed back incl. what was cut) of an order's points."""
        base = (PointsAward.member_ref == member_ref) & (PointsAward.order_ref == order_ref)
        earned = PointsAward.select(pw.fn.SUM(PointsAward.points)).where(base & (PointsAward.kind == "earn")).scalar()
        already = PointsAward.select(pw.fn.SUM(PointsAward.cut - PointsAward.points)).where(
            base & (PointsAward.kind == "clawback")).scalar()
        return int(earned or 0), int(already or 0)

    def grant_points(self, cfg, member_ref, points, expires_at, key, actor, memo):
        return ml.grant_points(cfg, member_ref, points, expires_at, key, actor, memo)

    def spend_points(self, cfg, member_ref, points, key, actor, memo):
        return ml.spend_points(cfg, member_ref, points, key, actor, memo)

    def points_balance(self, cfg, member_ref):
        return ml.points_balance(cfg, member_ref)

    def redemption(self, redemption_id):
        return Redemption.get_or_none(Redemption.redemption_id == redemption_id)

    def add_redemption(self, values):
        return Redemption.create(**values)

    # ---- cashback -----------------------------------------------------------------------------

    def cashback_award(self, values):
        CashbackAward.create(**values)

    def cashback_of_order(self, member_ref, order_ref):
        """(earned, already clawed back incl. what was cut) of an order's cashback."""
        def total(kind, expr):
            return int(CashbackAward.select(pw.fn.SUM(expr)).where(
                (CashbackAward.member_ref == member_ref) & (CashbackAward.order_ref == order_ref)
                & (CashbackAward.kind == kind)).scalar() or 0)
        return total("earn", CashbackAward.amount_fen), total("clawback", CashbackAward.cut - CashbackAward.amount_fen)

    def credit_cashback(self, member_ref, amount, key, actor, memo):
        return ml.credit_cashback(member_ref, amount, key, actor, memo)

    def debit_cashback(self, member_ref, amount, key, actor, memo):
        """Take cashback back; Problem insufficient-funds (with ``available``) when the sub-account is short."""
        with db.atomic():
            return ml.debit_cashback(member_ref, amount, key, actor, memo)

    # ---- paid plans ---------------------------------------------------------------------------

    def plan_at(self, member_ref, at):
        """The plan code of the paid period in force at ``at`` (start <= at < end, latest start), or None."""
        p = db.obj.param
        # Plain SQL on the hot path (every event and checkout): peewee's builder costs more than the query.
        row = db.execute_sql(f'SELECT plan FROM plan_period WHERE member_ref = {p} AND start <= {p} AND "end" > {p} '
                             f'ORDER BY start DESC LIMIT 1', (member_ref, at, at)).fetchone()
        return None if row is None else row[0]

    def paid_periods(self, member_ref, at):
        """{plan code: (periods, fen)} over every paid period started by ``at``."""
        rows = (PlanPeriod.select(PlanPeriod.plan, pw.fn.COUNT(PlanPeriod.id), pw.fn.SUM(PlanPeriod.price_fen))
                .where((PlanPeriod.member_ref == member_ref) & (PlanPeriod.start <= at))
                .group_by(PlanPeriod.plan).tuples())
        return {code: (int(n), int(total or 0)) for code, n, total in rows}

    def live_subscription(self, member_ref, at):
        return (Subscription.select().where((Subscription.member_ref == member_ref)
                                            & (Subscription.status.in_(LIVE_SUBSCRIPTION))
                                            & (Subscription.current_end > at))
                .order_by(Subscription.id.desc()).first())

    def subscription_locked(self, sub_id):
        return for_update(Subscription.select().where(Subscription.id == sub_id)).get()

    def add_subscription(self, values):
        return Subscription.create(**values)

    def update_subscription(self, sub, **changes):
        Subscription.update(**changes).where(Subscription.id == sub.id).execute()
        for k, v in changes.items():
            setattr(sub, k, v)

    def add_period(self, values):
        PlanPeriod.create(**values)

    def renewals_due(self, until):
        return [s for (s,) in Subscription.select(Subscription.id).where(
            (Subscription.status == "active") & (Subscription.auto_renew == True)  # noqa: E712
            & (Subscription.current_end <= until)).tuples()]

    def subscriptions_ended(self, at):
        return [s for (s,) in Subscription.select(Subscription.id).where(
            Subscription.status.in_(LIVE_SUBSCRIPTION) & (Subscription.current_end <= at)).tuples()]

    def pay_plan(self, cfg, sub, plan, start, payment, payment_ref, actor):
        """Book a plan fee (an external payment first comes into the member's cash); returns the journal id."""
        key = f"plan-{sub.id}-{start.strftime('%Y%m%dT%H%M%S')}"
        memo = f"{plan['name']} {timefmt.iso(start)}"
        if payment == "external":
            # An external payment is still booked: bank clearing -> member cash -> plan fee, so the
            # ledger shows the money and the settlement like any other plan fee.
            ml.ensure(sub.member_ref)
            ml.ledger.apply_operation("recharge", {"customer": sub.member_ref, "amount": int(plan["price_fen"]),
                                                   "external_ref": payment_ref,
                                                   "metadata": {"memo": f"external payment {payment_ref}"}},
                                      actor, idempotency_key=key + "-ext", client=ml.CLIENT)
        return ml.charge_plan(sub.member_ref, int(plan["price_fen"]), key, actor, memo)

    def atomic(self):
        return db.atomic()


LIVE = LiveState()
