"""Events out of order: a refund that arrived before its payment, and events dated in a closed period."""
from app.platform import clock, timefmt
from app.services.membership.state import LIVE

RULE_CLOSED = "membership.late_events.closed_period.book_now"
RULE_REFUND_FIRST = "membership.refund_before_payment"


def book(cfg, member, at, st=LIVE):
    """Where an event dated ``at`` is booked: (booking instant, late dict or None).

    A member's period is closed once its periodic deduction (or monthly reset) has been applied to that
    member. An event dated before the latest applied deduction would change a period already settled,
    so it is booked now, in the open period: growth, caps and points expiry as if it happened now. The
    rule depends only on the event's date and the member's settled periods, so it gives the same answer
    whichever request or retry meets it; events of periods not yet settled (a backfill of history) keep
    their date.
    """
    closed = st.last_deduction(member.member_ref)
    if closed is None or at >= closed:
        return at, None
    now = max(clock.now(), closed)
    return now, {"occurred_at": timefmt.iso(at), "booked_at": timefmt.iso(now), "closed_at": timefmt.iso(closed),
                 "rule": RULE_CLOSED}


def after_payment(cfg, member, event, result, at, actor, st=LIVE):
    """An ``order_paid`` whose order already has refunds (they came first): claw back their share now.

    Runs after the payment's own writes, in the same transaction, through the ordinary refund claw-back
    of growth, points and cashback (a refund of 0 fen: the earlier refunds are already stored). The stored
    result of the payment event is updated so a replay answers the same.
    """
    if event["type"] != "order_paid" or not event.get("order_ref"):
        return result
    paid, refunded = st.order_totals(event["order_ref"], member.member_ref)
    if refunded <= 0:
        return result
    from app.services.membership import benefits, growth, plans, points
    synthetic = {"event_id": f"{event['event_id']}:refund-before-payment", "type": "order_refunded",
                 "member_id": member.member_ref, "order_ref": event["order_ref"], "amount_fen": 0}
    plan = plans.active_plan(cfg, member.member_ref, at, st)
    g = growth._clawback(cfg, member, synthetic, at, st)
    p = points._clawback(cfg, member, synthetic, at, actor, st)
    c = benefits.apply_cashback(cfg, member, synthetic, at, plan, actor, st)
    change = growth.finish(cfg, member, at, f"refund before payment of order {event['order_ref']}",
                           event["event_id"], st=st)
    if st.keeps_decisions:
        st.decision("membership", cfg.version, RULE_REFUND_FIRST, f"member:{member.member_ref}",
                    {"order_ref": event["order_ref"], "paid_fen": paid, "refunded_before_fen": refunded},
                    {"growth": sum(e["delta"] for e in g), "points": sum(e["points"] for e in p),
                     "cashback_fen": sum(e["amount_fen"] for e in c)})
    result = dict(result, refunds_before_payment={
        "rule": RULE_REFUND_FIRST, "refunded_fen": refunded, "growth": g, "points": p, "cashback": c})
    result["level"] = {"level": member.level, "changed": result["level"]["changed"] or change is not None,
                       "change": change or result["level"]["change"]}
    st.update_event_result(event["event_id"], result)
    return result
