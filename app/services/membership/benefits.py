"""Benefits (权益) per level and paid plan: benefits in force, checkout benefits for a cart, monthly coupons."""
import datetime as dt

import peewee as pw

from app.db import for_update, transactional
from app.errors import Problem
from app.models.membership import CouponGrant, Member, PlanPeriod
from app.platform import clock
from app.services.membership import policy as mp
from app.services.membership.growth import clawback_target
from app.services.membership.plans import active_plan
from app.services.membership.state import LIVE


def benefits_in_force(cfg, level, plan):
    """Every benefit of the level and of the active plan, each with its source and rule."""
    out = []
    for name in cfg.by_level.get(level) or []:
        item = dict(cfg.catalogue[name])
        item.update(source=f"level:{level}", rule=f"benefits.levels.{level}.{name}", version=cfg.version)
        out.append(item)
    if plan:
        for name in cfg.by_plan.get(plan.get("code")) or []:
            item = dict(cfg.catalogue[name])
            item.update(source=f"plan:{plan['code']}", rule=f"benefits.plans.{plan['code']}.{name}",
                        version=cfg.version)
            out.append(item)
        level_name = plan.get("paid_ladder_level")
        for name in plan.get("paid_level_benefits") or []:  # attached by paid.with_ladder
            item = dict(cfg.catalogue[name])
            item.update(source=f"paid_level:{level_name}", rule=f"benefits.paid_levels.{level_name}.{name}",
                        version=cfg.version)
            out.append(item)
    return out


def multiplier(cfg, level, plan):
    """Points multiplier (percent) from benefits in force: the largest of level and plan benefits.

    Worked out once per level and plan benefits for the Config (see ``once``).
    """
    return once(cfg, _multiplier, level, plan)


_UNSEEN = object()


def once(cfg, fn, level, plan):
    """``fn(cfg, level, plan)`` worked out once per Config, level and plan benefits: what ``benefits_in_force``
    reads of the plan (its code, and the paid ladder's level and benefits ``paid.with_ladder`` attaches).

    The answer is shared by every later caller: treat it as read-only.
    """
    key = (fn, level, plan.get("code"), plan.get("paid_ladder_level"),
           tuple(plan.get("paid_level_benefits") or ())) if plan else (fn, level)
    got = cfg._benefits_memo.get(key, _UNSEEN)
    if got is _UNSEEN:
        got = cfg._benefits_memo[key] = fn(cfg, level, plan)
    return got


def _best_cashback(cfg, level, plan):
    best = None
    for item in benefits_in_force(cfg, level, plan):
        if item["type"] == "cashback" and (best is None or int(item["rate_bp"]) > int(best["rate_bp"])):
            best = item
    return best


def _multiplier(cfg, level, plan):
    best, source = 100, None
    for item in benefits_in_force(cfg, level, plan):
        if item["type"] == "points_multiplier" and int(item["percent"]) > best:
            best, source = int(item["percent"]), item["rule"]
    return best, source


def service_from(items):
    """The strongest service benefit: {"priority", "queue", "dedicated_agent", "priority_delivery", "rules"}."""
    best = {"priority": 0, "queue": None, "dedicated_agent": False, "priority_delivery": False, "rules": []}
    for item in items:
        if item["type"] != "service":
            continue
        best["rules"].append(item["rule"])
        if int(item.get("priority", 0)) > best["priority"]:
            best["priority"] = int(item.get("priority", 0))
            best["queue"] = item.get("queue")
        best["dedicated_agent"] |= bool(item.get("dedicated_agent"))
        best["priority_delivery"] |= bool(item.get("priority_delivery"))
    return best


def _eligible_subtotal(item, cart):
    cats = item.get("categories")
    return sum(int(i["price_fen"]) * int(i.get("quantity", 1)) for i in cart["items"]
               if not cats or i.get("category") in cats)


def cart_discounts(cfg, items, cart):
    """The discount benefits among ``items`` that a cart qualifies for, best first; only the best is applied."""
    discounts = []
    for item in items:
        if item["type"] != "discount":
            continue
        base = _eligible_subtotal(item, cart)
        if base < int(item.get("min_order_fen", 0)) or base <= 0:
            continue
        amount = base * int(item["rate_bp"]) // 10000
        if item.get("max_fen") is not None:
            amount = min(amount, int(item["max_fen"]))
        discounts.append({"benefit": item["name"], "amount_fen": amount, "rate_bp": int(item["rate_bp"]),
                          "source": item["source"], "rule": item["rule"], "version": cfg.version})
    discounts.sort(key=lambda d: -d["amount_fen"])
    applied = discounts[:1]
    for d in discounts:
        d["applied"] = d in applied
    return discounts


def checkout(cfg, member, plan, cart):
    """What a cart gets from the member's benefits; read-only.

    The single best discount applies (discounts do not stack); fee waivers and usable coupons are
    listed; points to earn are estimated on the payable amount with the points ruleset and the
    multiplier in force (before earning caps, which depend on the day's usage).
    """
    items = benefits_in_force(cfg, member["level"], plan)
    subtotal = sum(int(i["price_fen"]) * int(i.get("quantity", 1)) for i in cart["items"])
    shipping = int(cart.get("shipping_fen", 0))
    discounts = cart_discounts(cfg, items, cart)
    discount_total = sum(d["amount_fen"] for d in discounts if d["applied"])
    waivers = []
    for item in items:
        if item["type"] == "fee_waiver" and item.get("fee", "shipping") == "shipping" and shipping > 0 \
                and subtotal >= int(item.get("min_order_fen", 0)):
            waivers.append({"benefit": item["name"], "fee": "shipping", "amount_fen": shipping,
                            "source": item["source"], "rule": item["rule"], "version": cfg.version})
            break
    waived = sum(w["amount_fen"] for w in waivers)
    payable_goods = subtotal - discount_total
    coupons = []
    for item in items:
        if item["type"] == "coupon":
            coupons.append({"benefit": item["name"], "amount_fen": int(item["amount_fen"]),
                            "min_order_fen": int(item.get("min_order_fen", 0)),
                            "usable": payable_goods >= int(item.get("min_order_fen", 0)),
                            "per_month": int(item.get("per_month", 1)), "source": item["source"],
                            "rule": item["rule"], "version": cfg.version})
    facts = {"type": "order_paid", "amount_fen": payable_goods, "channel": cart.get("channel"),
             "member": {"level": member["level"], "paid": plan is not None,
                        "plan": plan.get("code") if plan else None}}
    points = {"points": 0, "rules": [], "multiplier_pct": 100, "multiplier_rule": None, "version": cfg.version,
              "note": "estimate before earning caps"}
    if cfg.points:
        matches, version = mp.evaluate(cfg.points_ruleset, facts, cfg.ps)
        mult, mult_rule = multiplier(cfg, member["level"], plan)
        for m in matches:
            for a in m.actions:
                if a.get("action") != "award_points":
                    continue
                base = int(a.get("amount", 0)) + payable_goods * int(a.get("per_yuan", 0)) // 100
                pts = base * mult // 100
                points["rules"].append({"rule": m.rule, "base": base, "points": pts, "ruleset": cfg.points_ruleset,
                                        "version": version})
                points["points"] += pts
        points.update(multiplier_pct=mult, multiplier_rule=mult_rule)
    cashback = []
    for item in items:
        if item["type"] == "cashback":
            cashback.append({"benefit": item["name"], "amount_fen": payable_goods * int(item["rate_bp"]) // 10000,
                             "rate_bp": int(item["rate_bp"]), "source": item["source"], "rule": item["rule"],
                             "version": cfg.version})
    return {"member_id": member["member_id"], "known_member": member["known"], "level": member["level"],
            "plan": plan.get("code") if plan else None, "policy_version": cfg.version,
            "subtotal_fen": subtotal, "shipping_fen": shipping, "discounts": discounts,
            "discount_fen": discount_total, "fee_waivers": waivers, "coupons": coupons,
            "points_to_earn": points, "cashback": cashback,
            "payable_fen": payable_goods + shipping - waived}


# ---- cashback (on paid orders) -----------------------------------------------------------------

def apply_cashback(cfg, member, event, at, plan, actor, st=LIVE):
    """Credit the best cashback benefit in force on a paid order, or claw it back on a refund.

    Returns:
        list of {"rule", "amount_fen", "cut", "reason", "journal"} (empty when nothing applies).
    """
    order_ref = event.get("order_ref")
    if not order_ref:
        return []
    if event["type"] == "order_paid":
        best = once(cfg, _best_cashback, member.level, plan)
        if best is None:
            return []
        amount = int(event["amount_fen"]) * int(best["rate_bp"]) // 10000
        if amount <= 0:
            return []
        key = f"cb-{event['event_id']}"
        journal = st.credit_cashback(member.member_ref, amount, key, actor, f"cashback {best['rule']} order {order_ref}")
        reason = f"{best['rate_bp']} bp cashback on order {order_ref} ({best['source']})"
        st.cashback_award(dict(member_ref=member.member_ref, entry_key=key, kind="earn", amount_fen=amount,
                               event_id=event["event_id"], order_ref=order_ref, rule=best["rule"],
                               policy_version=cfg.version, reason=reason, journal=journal, at=at))
        if st.keeps_decisions:
            st.decision("benefits", cfg.version, best["rule"], f"member:{member.member_ref}",
                        {"order_ref": order_ref, "amount_fen": event["amount_fen"], "rate_bp": best["rate_bp"]},
                        {"cashback_fen": amount})
        return [{"rule": best["rule"], "amount_fen": amount, "cut": 0, "reason": reason, "journal": journal}]
    if event["type"] != "order_refunded":
        return []
    earned, already = st.cashback_of_order(member.member_ref, order_ref)
    if earned <= 0:
        return []
    paid, refunded = st.order_totals(order_ref, member.member_ref)
    refunded += event.get("amount_fen") or 0
    due = clawback_target(earned, paid, refunded) - already
    if due <= 0:
        return []
    key = f"cb-{event['event_id']}"
    take, journal = due, None
    try:
        journal = st.debit_cashback(member.member_ref, take, key, actor, f"cashback clawback order {order_ref}")
    except Problem as exc:
        if exc.code != "insufficient-funds":
            raise
        take = max(0, min(due, int(exc.extra.get("available") or 0)))
        if take:
            journal = st.debit_cashback(member.member_ref, take, key, actor, f"cashback clawback order {order_ref}")
    reason = f"refund on order {order_ref}: claw back {due} fen of cashback" + (
        f"; only {take} left in the cashback sub-account" if take < due else "")
    st.cashback_award(dict(member_ref=member.member_ref, entry_key=key, kind="clawback", amount_fen=-take,
                           cut=due - take, event_id=event["event_id"], order_ref=order_ref,
                           rule="benefits.cashback.refund_clawback", policy_version=cfg.version, reason=reason,
                           journal=journal, at=at))
    if st.keeps_decisions:
        st.decision("benefits", cfg.version, "cashback.refund_clawback", f"member:{member.member_ref}",
                    {"order_ref": order_ref, "earned": earned, "paid_fen": paid, "refunded_fen": refunded},
                    {"clawback_fen": take, "cut": due - take})
    return [{"rule": "benefits.cashback.refund_clawback", "amount_fen": -take, "cut": due - take, "reason": reason,
             "journal": journal}]


# ---- monthly coupons (job) ----------------------------------------------------------------------

def monthly_coupons(cfg, level, plan):
    """The coupon benefits a member at ``level`` with ``plan`` gets each month (once per benefit and month)."""
    return [item for item in benefits_in_force(cfg, level, plan) if item["type"] == "coupon"]


def issue_coupons(at=None, actor="system:coupons", progress=None):
    """Issue this month's coupon benefits as voucher lots, once per member, benefit and month
    (``progress(done, total)`` is told after each member)."""
    from app.services.membership.mall import grant_voucher  # mall builds on benefits (one way): late import
    at = at or clock.now()
    cfg = mp.current()
    month = mp.window_key(cfg, at, "month")
    loc = mp.local(cfg, at)
    month_end = mp.to_utc(mp.add_months(loc.replace(day=1, hour=0, minute=0, second=0, microsecond=0), 1))
    coupon_levels = [lv for lv, names in cfg.by_level.items()
                     if any(cfg.catalogue[n]["type"] == "coupon" for n in names)]
    refs = {r for (r,) in Member.select(Member.member_ref).where(Member.level.in_(coupon_levels)).tuples()} \
        if coupon_levels else set()
    refs |= {r for (r,) in PlanPeriod.select(PlanPeriod.member_ref).where(
        (PlanPeriod.start <= at) & (PlanPeriod.end > at)).tuples()}
    issued = 0
    for i, ref in enumerate(sorted(refs), 1):
        member = Member.get_or_none(Member.member_ref == ref)
        level = member.level if member else cfg.levels[0]["name"]
        plan = active_plan(cfg, ref, at)
        for item in monthly_coupons(cfg, level, plan):
            valid = dt.timedelta(days=int(item.get("valid_days", 0))) if item.get("valid_days") else None
            expires = min(at + valid, month_end) if valid else month_end

            @transactional()
            def grant():
                CouponGrant.insert(member_ref=ref, benefit=item["name"], month=month,
                                   amount_fen=int(item["amount_fen"]), count=int(item.get("per_month", 1)),
                                   source=item["source"], policy_version=cfg.version).on_conflict_ignore().execute()
                row = for_update(CouponGrant.select().where(
                    (CouponGrant.member_ref == ref) & (CouponGrant.benefit == item["name"])
                    & (CouponGrant.month == month))).get()
                if row.journal is not None:
                    return 0
                journals = []
                for n in range(int(item.get("per_month", 1))):
                    # held with its threshold, so checkout can list and apply it (mall.grant_voucher)
                    journals.append(grant_voucher(ref, "voucher", item, expires,
                                                  f"coupon-{ref}-{item['name']}-{month}-{n}", actor,
                                                  f"benefit:{item['name']}", item["rule"], at).journal)
                CouponGrant.update(journal=",".join(j or "" for j in journals)[:100]).where(
                    (CouponGrant.member_ref == ref) & (CouponGrant.benefit == item["name"])
                    & (CouponGrant.month == month)).execute()
                return 1
            issued += grant()
        if progress is not None:
            progress(i, len(refs))
    return {"month": month, "issued": issued}


def level_distribution():
    return dict(Member.select(Member.level, pw.fn.COUNT(Member.id)).group_by(Member.level).tuples())
