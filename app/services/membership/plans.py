"""Paid plans (付费会员): subscribe (cash balance or external payment), auto-renew with retry then lapse, cancel, expire."""
import datetime as dt
import logging

from app.db import transactional
from app.errors import Problem
from app.models.membership import PlanPeriod
from app.platform import clock
from app.services.membership import policy as mp
from app.services.membership.state import LIVE, LIVE_SUBSCRIPTION as LIVE_STATES
from app.platform import timefmt

log = logging.getLogger(__name__)

def active_period(member_ref, at):
    """The paid period in force at ``at`` (start <= at < end), or None."""
    return (PlanPeriod.select().where((PlanPeriod.member_ref == member_ref) & (PlanPeriod.start <= at)
                                      & (PlanPeriod.end > at))
            .order_by(PlanPeriod.start.desc()).first())


def active_plan(cfg, member_ref, at, st=LIVE):
    """The plan document of the member's period in force at ``at`` (with ``code``), or None."""
    code = st.plan_at(member_ref, at)
    if code is None:
        return None
    plan = cfg.plans.get(code)
    if plan is None:  # plan withdrawn from policy: the paid period still counts, with no extras
        return {"code": code, "name": code}
    return plan


def _period_end(cfg, plan, start):
    return mp.to_utc(mp.add_months(mp.local(cfg, start), int(plan["period_months"])))


def status_at(sub, at=None):
    """(status, ended_at) of a subscription now, from the clock: a live one whose paid period is over reads as
    ``expired`` (no renewal wanted) or ``lapsed`` (every renewal attempt failed) at once — the job only records
    it. An auto-renewing one whose renewal is still to be tried stays ``active`` (the renewal starts at the
    period end); the member is not paid meanwhile, since no paid period is in force (``active_plan``)."""
    at = at or clock.now()
    if sub.status in LIVE_STATES and sub.current_end <= at:
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
            "next_attempt_at": timefmt.iso(sub.next_attempt_at) if status in LIVE_STATES else None,
            "last_failure": sub.last_failure, "ended_at": timefmt.iso(ended_at),
            "policy_version": sub.policy_version}


def current_subscription(member_ref, at=None, st=LIVE):
    return st.live_subscription(member_ref, at or clock.now())


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
        return subscription_dict(subscribe_in(cfg, member_ref, plan, payment, payment_ref, auto_renew, actor, at))
    return run()


def subscribe_in(cfg, member_ref, plan, payment, payment_ref, auto_renew, actor, at, st=LIVE):
    """Start ``plan`` at ``at`` in the caller's transaction (live) or a simulation's state; returns the subscription."""
    st.member(cfg, member_ref, at)
    live = st.live_subscription(member_ref, at)
    if live is not None:
        raise Problem(409, "already-subscribed", "Already subscribed",
                      f"member {member_ref!r} has plan {live.plan!r} until {timefmt.iso(live.current_end)}",
                      subscription_id=live.id)
    end = _period_end(cfg, plan, at)
    sub = st.add_subscription(dict(member_ref=member_ref, plan=plan["code"], status="active", auto_renew=auto_renew,
                                   current_start=at, current_end=end, policy_version=cfg.version))
    journal = st.pay_plan(cfg, sub, plan, at, payment, payment_ref, actor)
    st.add_period(dict(subscription=sub, member_ref=member_ref, plan=plan["code"], start=at, end=end,
                       price_fen=int(plan["price_fen"]), payment=payment, payment_ref=payment_ref,
                       journal=journal, kind="subscribe", policy_version=cfg.version))
    if st.keeps_decisions:
        st.decision("plans", cfg.version, f"plans.{plan['code']}", f"member:{member_ref}",
                    {"payment": payment, "price_fen": plan["price_fen"]},
                    {"subscribed": plan["code"], "until": timefmt.iso(end)})
    return sub


def cancel(member_ref, actor):
    """Stop auto-renewal; benefits stay until the paid period ends (then the plan expires)."""
    @transactional()
    def run():
        return subscription_dict(cancel_in(member_ref, clock.now()))
    return run()


def cancel_in(member_ref, at, st=LIVE):
    sub = st.live_subscription(member_ref, at)
    if sub is None:
        raise Problem(404, "no-subscription", "No subscription", f"member {member_ref!r} has no live plan")
    sub = st.subscription_locked(sub.id)
    if sub.status == "active":
        st.update_subscription(sub, status="cancelled", auto_renew=False, next_attempt_at=None)
    return sub


def renew_one(sub_id, at, actor="system:renew", cfg=None, st=LIVE):
    """Try to renew one due subscription; a short balance schedules a retry, the last failure leaves it to lapse."""
    cfg = cfg or mp.current()
    renewal = cfg.renewal
    before = dt.timedelta(hours=float(renewal.get("attempt_before_hours", 24)))
    retry = dt.timedelta(hours=float(renewal.get("retry_after_hours", 12)))
    max_attempts = int(renewal.get("max_attempts", 2))

    def run():
        sub = st.subscription_locked(sub_id)
        if (sub.status != "active" or not sub.auto_renew or sub.current_end - before > at
                or sub.renew_attempts >= max_attempts
                or (sub.next_attempt_at and sub.next_attempt_at > at)):
            return None
        plan = cfg.plans.get(sub.plan)
        if plan is None:
            st.update_subscription(sub, auto_renew=False, last_failure="plan no longer offered")
            return {"subscription_id": sub.id, "renewed": False, "reason": "plan no longer offered"}
        start = sub.current_end
        end = _period_end(cfg, plan, start)
        try:
            with st.atomic():
                journal = st.pay_plan(cfg, sub, plan, start, "balance", None, actor)
        except Problem as exc:
            attempts = sub.renew_attempts + 1
            final = attempts >= max_attempts
            st.update_subscription(sub, renew_attempts=attempts, last_failure=f"{exc.code}: {exc.detail}",
                                   next_attempt_at=None if final else at + retry)
            if st.keeps_decisions:
                st.decision("plans", cfg.version, "plans.renewal", f"member:{sub.member_ref}",
                            {"attempt": attempts, "max_attempts": max_attempts, "failure": exc.code},
                            {"renewed": False, "will_lapse_at": timefmt.iso(sub.current_end) if final else None,
                             "next_attempt_at": None if final else timefmt.iso(at + retry)})
            return {"subscription_id": sub.id, "renewed": False, "attempt": attempts, "failure": exc.code}
        st.add_period(dict(subscription=sub, member_ref=sub.member_ref, plan=sub.plan, start=start, end=end,
                           price_fen=int(plan["price_fen"]), payment="balance", journal=journal, kind="renew",
                           policy_version=cfg.version))
        st.update_subscription(sub, current_start=start, current_end=end, renew_attempts=0, next_attempt_at=None,
                               last_failure=None)
        if st.keeps_decisions:
            st.decision("plans", cfg.version, "plans.renewal", f"member:{sub.member_ref}",
                        {"plan": sub.plan, "price_fen": plan["price_fen"]},
                        {"renewed": True, "until": timefmt.iso(end)})
        return {"subscription_id": sub.id, "renewed": True, "until": timefmt.iso(end)}
    return transactional()(run)() if st.live else run()


def expire_one(sub_id, at, cfg=None, st=LIVE):
    """Close a subscription whose paid period is over: expired (no renewal wanted) or lapsed (renewal failed)."""
    def run():
        sub = st.subscription_locked(sub_id)
        if sub.status not in LIVE_STATES or sub.current_end > at:
            return None
        status = "lapsed" if sub.status == "active" and sub.auto_renew else "expired"
        st.update_subscription(sub, status=status, ended_at=sub.current_end, next_attempt_at=None)
        if st.keeps_decisions:
            st.decision("plans", (cfg or mp.current()).version, f"plans.{status}", f"member:{sub.member_ref}",
                        {"current_end": timefmt.iso(sub.current_end), "renew_attempts": sub.renew_attempts},
                        {"status": status})
        return {"subscription_id": sub.id, "status": status}
    return transactional()(run)() if st.live else run()


def run_due(at=None, cfg=None, st=LIVE):
    """Renew what is due, then close what ended; returns counts (the renew_plans job)."""
    at = at or clock.now()
    cfg = cfg or mp.current()
    before = dt.timedelta(hours=float(cfg.renewal.get("attempt_before_hours", 24)))
    out = {"renewed": 0, "failed": 0, "lapsed": 0, "expired": 0}
    for sid in st.renewals_due(at + before):
        res = renew_one(sid, at, cfg=cfg, st=st)
        if res:
            out["renewed" if res.get("renewed") else "failed"] += 1
    for sid in st.subscriptions_ended(at):
        res = expire_one(sid, at, cfg=cfg, st=st)
        if res:
            out[res["status"]] += 1
    return out
