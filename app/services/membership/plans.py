"""Paid plans (付费会员): subscribe (cash balance or external payment), auto-renew with retry then lapse, cancel, expire."""
import datetime as dt
import logging

from app.db import db, for_update, transactional
from app.errors import Problem
from app.models.membership import PlanPeriod, Subscription
from app.platform import clock
from app.services.membership import ledger_port as ml
from app.services.membership import policy as mp
from app.services.membership.growth import lock_member
from app.platform import timefmt

log = logging.getLogger(__name__)

LIVE = ("active", "cancelled")


def active_period(member_ref, at):
    """The paid period in force at ``at`` (start <= at < end), or None."""
    return (PlanPeriod.select().where((PlanPeriod.member_ref == member_ref) & (PlanPeriod.start <= at)
                                      & (PlanPeriod.end > at))
            .order_by(PlanPeriod.start.desc()).first())


def active_plan(cfg, member_ref, at):
    """The plan document of the member's period in force at ``at`` (with ``code``), or None."""
    p = db.obj.param
    # Plain SQL on the hot path (every event and checkout): peewee's builder costs more than the query.
    row = db.execute_sql(f'SELECT plan FROM plan_period WHERE member_ref = {p} AND start <= {p} AND "end" > {p} '
                         f'ORDER BY start DESC LIMIT 1', (member_ref, at, at)).fetchone()
    if row is None:
        return None
    plan = cfg.plans.get(row[0])
    if plan is None:  # plan withdrawn from policy: the paid period still counts, with no extras
        return {"code": row[0], "name": row[0]}
    return plan


def _period_end(cfg, plan, start):
    return mp.to_utc(mp.add_months(mp.local(cfg, start), int(plan["period_months"])))


def status_at(sub, at=None):
    """(status, ended_at) of a subscription now, from the clock: a live one whose paid period is over reads as
    ``expired`` (no renewal wanted) or ``lapsed`` (every renewal attempt failed) at once — the job only records
    it. An auto-renewing one whose renewal is still to be tried stays ``active`` (the renewal starts at the
    period end); the member is not paid meanwhile, since no paid period is in force (``active_plan``)."""
    at = at or clock.now()
    if sub.status in LIVE and sub.current_end <= at:
        if sub.status == "active" and sub.auto_renew:
            if sub.renew_attempts < int(mp.current().renewal.get("max_attempts", 2)):
                return sub.status, sub.ended_at
            return "lapsed", sub.current_end
        return "expired", sub.current_end
    return sub.status, sub.ended_at


def subscription_dict(sub, at=None):
    if sub is None:
        return None
    status, ended_at = status_at(sub, at)
    return {"subscription_id": sub.id, "member_id": sub.member_ref, "plan": sub.plan, "status": status,
            "auto_renew": sub.auto_renew, "current_period": {"start": timefmt.iso(sub.current_start),
                                                             "end": timefmt.iso(sub.current_end)},
            "renews_at": timefmt.iso(sub.current_end) if status == "active" and sub.auto_renew else None,
            "renew_attempts": sub.renew_attempts,
            "next_attempt_at": timefmt.iso(sub.next_attempt_at) if status in LIVE else None,
            "last_failure": sub.last_failure, "ended_at": timefmt.iso(ended_at),
            "policy_version": sub.policy_version}


def current_subscription(member_ref, at=None):
    at = at or clock.now()
    return (Subscription.select().where((Subscription.member_ref == member_ref)
                                        & (Subscription.status.in_(LIVE)) & (Subscription.current_end > at))
            .order_by(Subscription.id.desc()).first())


def _charge(cfg, sub, plan, start, payment, payment_ref, actor):
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


def subscribe(member_ref, plan_code, payment, payment_ref, auto_renew, actor):
    """Start a paid plan now, paying its first period.

    Args:
        member_ref: the member.
        plan_code: a plan code from the plans policy.
        payment: "balance" (member's cash account) or "external" (confirmed payment ``payment_ref``).
        payment_ref: external payment reference (required for external).
        auto_renew: renew at period end by job.
        actor: who acts (journals, audit).

    Returns:
        the subscription dict.

    Raises:
        Problem: unknown-plan (422), already-subscribed (409), insufficient-funds from the ledger.
    """
    cfg = mp.current()
    plan = cfg.plans.get(plan_code)
    if plan is None:
        raise Problem(422, "unknown-plan", "Unknown plan",
                      f"plan {plan_code!r} is not offered; offered: {sorted(cfg.plans)}")
    if payment == "external" and not payment_ref:
        raise Problem(422, "payment-ref-required", "Payment reference required",
                      "an external payment needs payment_ref")
    at = clock.now()

    @transactional()
    def run():
        lock_member(cfg, member_ref, at)
        live = current_subscription(member_ref, at)
        if live is not None:
            raise Problem(409, "already-subscribed", "Already subscribed",
                          f"member {member_ref!r} has plan {live.plan!r} until {timefmt.iso(live.current_end)}",
                          subscription_id=live.id)
        end = _period_end(cfg, plan, at)
        sub = Subscription.create(member_ref=member_ref, plan=plan_code, status="active", auto_renew=auto_renew,
                                  current_start=at, current_end=end, policy_version=cfg.version)
        journal = _charge(cfg, sub, plan, at, payment, payment_ref, actor)
        PlanPeriod.create(subscription=sub, member_ref=member_ref, plan=plan_code, start=at, end=end,
                          price_fen=int(plan["price_fen"]), payment=payment, payment_ref=payment_ref,
                          journal=journal, kind="subscribe", policy_version=cfg.version)
        mp.record_decision("plans", cfg.version, f"plans.{plan_code}", f"member:{member_ref}",
                           {"payment": payment, "price_fen": plan["price_fen"]},
                           {"subscribed": plan_code, "until": timefmt.iso(end)})
        return subscription_dict(sub)
    return run()


def cancel(member_ref, actor):
    """Stop auto-renewal; benefits stay until the paid period ends (then the plan expires)."""
    @transactional()
    def run():
        sub = current_subscription(member_ref)
        if sub is None:
            raise Problem(404, "no-subscription", "No subscription", f"member {member_ref!r} has no live plan")
        sub = for_update(Subscription.select().where(Subscription.id == sub.id)).get()
        if sub.status == "active":
            Subscription.update(status="cancelled", auto_renew=False, next_attempt_at=None) \
                .where(Subscription.id == sub.id).execute()
        return subscription_dict(Subscription.get_by_id(sub.id))
    return run()


def renew_one(sub_id, at, actor="system:renew"):
    """Try to renew one due subscription; a short balance schedules a retry, the last failure leaves it to lapse."""
    cfg = mp.current()
    renewal = cfg.renewal
    before = dt.timedelta(hours=float(renewal.get("attempt_before_hours", 24)))
    retry = dt.timedelta(hours=float(renewal.get("retry_after_hours", 12)))
    max_attempts = int(renewal.get("max_attempts", 2))

    @transactional()
    def run():
        sub = for_update(Subscription.select().where(Subscription.id == sub_id)).get()
        if (sub.status != "active" or not sub.auto_renew or sub.current_end - before > at
                or sub.renew_attempts >= max_attempts
                or (sub.next_attempt_at and sub.next_attempt_at > at)):
            return None
        plan = cfg.plans.get(sub.plan)
        if plan is None:
            Subscription.update(auto_renew=False, last_failure="plan no longer offered").where(
                Subscription.id == sub.id).execute()
            return {"subscription_id": sub.id, "renewed": False, "reason": "plan no longer offered"}
        start = sub.current_end
        end = _period_end(cfg, plan, start)
        try:
            with db.atomic():
                journal = _charge(cfg, sub, plan, start, "balance", None, actor)
        except Problem as exc:
            attempts = sub.renew_attempts + 1
            final = attempts >= max_attempts
            Subscription.update(renew_attempts=attempts, last_failure=f"{exc.code}: {exc.detail}",
                                next_attempt_at=None if final else at + retry).where(Subscription.id == sub.id).execute()
            mp.record_decision("plans", cfg.version, "plans.renewal", f"member:{sub.member_ref}",
                               {"attempt": attempts, "max_attempts": max_attempts, "failure": exc.code},
                               {"renewed": False, "will_lapse_at": timefmt.iso(sub.current_end) if final else None,
                                "next_attempt_at": None if final else timefmt.iso(at + retry)})
            return {"subscription_id": sub.id, "renewed": False, "attempt": attempts, "failure": exc.code}
        PlanPeriod.create(subscription=sub, member_ref=sub.member_ref, plan=sub.plan, start=start, end=end,
                          price_fen=int(plan["price_fen"]), payment="balance", journal=journal, kind="renew",
                          policy_version=cfg.version)
        Subscription.update(current_start=start, current_end=end, renew_attempts=0, next_attempt_at=None,
                            last_failure=None).where(Subscription.id == sub.id).execute()
        mp.record_decision("plans", cfg.version, "plans.renewal", f"member:{sub.member_ref}",
                           {"plan": sub.plan, "price_fen": plan["price_fen"]}, {"renewed": True, "until": timefmt.iso(end)})
        return {"subscription_id": sub.id, "renewed": True, "until": timefmt.iso(end)}
    return run()


def expire_one(sub_id, at):
    """Close a subscription whose paid period is over: expired (no renewal wanted) or lapsed (renewal failed)."""
    @transactional()
    def run():
        sub = for_update(Subscription.select().where(Subscription.id == sub_id)).get()
        if sub.status not in LIVE or sub.current_end > at:
            return None
        status = "lapsed" if sub.status == "active" and sub.auto_renew else "expired"
        Subscription.update(status=status, ended_at=sub.current_end, next_attempt_at=None) \
            .where(Subscription.id == sub.id).execute()
        mp.record_decision("plans", mp.current().version, f"plans.{status}", f"member:{sub.member_ref}",
                           {"current_end": timefmt.iso(sub.current_end), "renew_attempts": sub.renew_attempts},
                           {"status": status})
        return {"subscription_id": sub.id, "status": status}
    return run()


def run_due(at=None):
    """Renew what is due, then close what ended; returns counts (the renew_plans job)."""
    at = at or clock.now()
    cfg = mp.current()
    before = dt.timedelta(hours=float(cfg.renewal.get("attempt_before_hours", 24)))
    out = {"renewed": 0, "failed": 0, "lapsed": 0, "expired": 0}
    due = [s for (s,) in Subscription.select(Subscription.id).where(
        (Subscription.status == "active") & (Subscription.auto_renew == True)  # noqa: E712
        & (Subscription.current_end <= at + before)).tuples()]
    for sid in due:
        res = renew_one(sid, at)
        if res:
            out["renewed" if res.get("renewed") else "failed"] += 1
    ended = [s for (s,) in Subscription.select(Subscription.id).where(
        Subscription.status.in_(LIVE) & (Subscription.current_end <= at)).tuples()]
    for sid in ended:
        res = expire_one(sid, at)
        if res:
            out[res["status"]] += 1
    return out
