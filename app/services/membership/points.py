"""Points (积分): earning by rule with tier multipliers and risk caps, refund claw-back, redemption with review; lots live in the ledger."""
import json
import random
import threading

from app.db import for_update, transactional
from app.errors import Problem
from app.models.membership import PointsAward, Redemption
from app.platform import clock
from app.services.membership import ledger_port as ml
from app.services.membership import policy as mp
from app.services.membership.benefits import multiplier
from app.services.membership.growth import apply_caps, clawback_target
from app.services.membership.state import LIVE
from app.platform import timefmt

GLOBAL = "*"


BUDGET_SHARDS = 16
SHARD_CAPS = tuple(f"points:global_daily_budget#{i}" for i in range(BUDGET_SHARDS))  # counter names
_local = threading.local()


class BudgetShortfall(Exception):
    """The deferred budget take at commit time found the budget short: redo the work in strict mode."""


def begin_budget(strict):
    """Start a transaction attempt: strict takes (and locks) budget shards up front, else defers them to commit."""
    _local.strict = strict
    _local.pending = {}


def budget_mark():
    return dict(getattr(_local, "pending", {}))


def budget_reset(mark):
    """Forget deferred takes of a rolled-back savepoint."""
    _local.pending = mark


def _take_shards(window, budget, amount, st=LIVE):
    """Take up to ``amount`` from the day's shards (each allows budget/N); returns what was taken.

    Live, the walk starts at a random shard so concurrent events spread over the rows; what is taken
    (everything up to the day's remainder) does not depend on the start, so a replay starts at the first.
    """
    start = random.randrange(BUDGET_SHARDS) if st.live else 0
    taken = 0
    for k in range(BUDGET_SHARDS):
        i = (start + k) % BUDGET_SHARDS
        allowance = budget // BUDGET_SHARDS + (budget % BUDGET_SHARDS if i == 0 else 0)
        row = st.counter(GLOBAL, SHARD_CAPS[i], window)
        take = min(max(0, allowance - row.amount), amount - taken)
        if take > 0:
            st.charge([row], take)
            taken += take
        if taken == amount:
            break
    return taken


def take_budget(cfg, at, budget, amount, st=LIVE):
    """Take ``amount`` from the global daily issuance budget; returns (taken, cut report or None).

    The day's budget is split over BUDGET_SHARDS counter rows so concurrent events do not queue on
    one hot row, and the take is deferred to the end of the transaction (``settle_budget``) so a
    shard row stays locked only while committing. If the budget turns out short at that point the
    transaction is redone in strict mode, where shards are taken up front and the grant is cut. The
    total never exceeds the budget.
    """
    window = mp.window_key(cfg, at, "day")
    if st.live and not getattr(_local, "strict", True):
        key = (window, budget)
        _local.pending[key] = _local.pending.get(key, 0) + amount
        return amount, None
    taken = _take_shards(window, budget, amount, st)
    if taken == amount:
        return taken, None
    return taken, {"cap": "global_daily_budget", "window": window, "limit": budget, "used": budget - taken}


def settle_budget():
    """Take the deferred budget amounts of this transaction; BudgetShortfall when the budget is short."""
    pending, _local.pending = getattr(_local, "pending", {}), {}
    for (window, budget), amount in sorted(pending.items()):
        if _take_shards(window, budget, amount) < amount:
            raise BudgetShortfall()


def apply_event(cfg, member, event, facts, at, plan, actor, st=LIVE):
    """Points earned or clawed back by one event (the member row is locked by the caller)."""
    if event["type"] == "order_refunded":
        entries = _clawback(cfg, member, event, at, actor, st)
    else:
        entries = _earn(cfg, member, event, facts, at, plan, actor, st)
    return {"delta": sum(e["points"] for e in entries), "entries": entries}


def _earn(cfg, member, event, facts, at, plan, actor, st):
    if not cfg.points:
        return []
    matches, version = mp.evaluate(cfg.points_ruleset, facts, cfg.ps)
    mult, mult_rule = multiplier(cfg, member.level, plan)
    entries = []
    for match in matches:
        for action in match.actions:
            if action.get("action") != "award_points":
                continue
            base = int(action.get("amount", 0))
            if "per_yuan" in action:
                base += (event.get("amount_fen") or 0) * int(action["per_yuan"]) // 100
            amount = base * mult // 100 if base > 0 else base
            if amount <= 0:
                continue
            granted, cuts, rows = apply_caps(cfg, "points", cfg.points.get("earning_caps") or [],
                                             member.member_ref, event, amount, at, max_field="max_points", st=st)
            budget = cfg.points.get("global_daily_budget")
            if budget is not None and granted > 0:
                taken, cut = take_budget(cfg, at, int(budget), granted, st)
                if cut:
                    cut["cut"] = granted - taken
                    cuts.append(cut)
                granted = taken
            st.charge(rows, granted)
            expires_at = mp.points_expiry(cfg, at)
            key = f"p:{event['event_id']}:{match.rule}"
            journal = None
            if granted > 0:
                journal = st.grant_points(cfg, member.member_ref, granted, expires_at, key, actor,
                                          f"{event['type']} {event['event_id']} rule {match.rule}")
            reason = f"{event['type']} by rule {match.rule}"
            if mult != 100:
                reason += f" x{mult}% ({mult_rule})"
            if cuts:
                reason += "; capped by " + ", ".join(f"{c['cap']} (-{c['cut']})" for c in cuts)
            st.points_award(dict(member_ref=member.member_ref, entry_key=key, kind="earn", points=granted,
                                          cut=amount - granted, cuts=cuts, event_id=event["event_id"],
                                          order_ref=event.get("order_ref"), rule=match.rule, policy_version=version,
                                          reason=reason, expires_at=expires_at, journal=journal, at=at))
            if st.keeps_decisions:
                st.decision(cfg.points_ruleset, version, match.rule, f"member:{member.member_ref}",
                            {"event_id": event["event_id"], "type": event["type"],
                             "amount_fen": event.get("amount_fen"), "level": member.level},
                            {"award_points": granted, "base": base, "multiplier_pct": mult, "cuts": cuts})
            entries.append({"rule": match.rule, "points": granted, "base": base, "multiplier_pct": mult,
                            "cut": amount - granted, "cuts": cuts, "expires_at": timefmt.iso(expires_at),
                            "reason": reason})
    return entries


def _clawback(cfg, member, event, at, actor, st=LIVE):
    order_ref = event.get("order_ref")
    if not cfg.points or not order_ref:
        return []
    paid, refunded = st.order_totals(order_ref, member.member_ref)
    refunded += event.get("amount_fen") or 0
    earned, already = st.points_of_order(member.member_ref, order_ref)
    due = clawback_target(earned, paid, refunded) - already
    if due <= 0:
        return []
    available = st.points_balance(cfg, member.member_ref)
    take = min(due, available)
    key = f"p:{event['event_id']}:refund_clawback"
    journal = st.spend_points(cfg, member.member_ref, take, key, actor,
                              f"refund clawback {order_ref}") if take > 0 else None
    cuts = [] if take == due else [{"cap": "available_balance", "cut": due - take}]
    reason = f"refund of {event.get('amount_fen', 0)} fen on order {order_ref}: claw back {due}"
    if cuts:
        reason += f"; only {take} available"
    st.points_award(dict(member_ref=member.member_ref, entry_key=key, kind="clawback", points=-take,
                         cut=due - take, cuts=cuts, event_id=event["event_id"], order_ref=order_ref,
                         rule="points.refund_clawback", policy_version=cfg.version, reason=reason,
                         journal=journal, at=at), later=False)
    if st.keeps_decisions:
        st.decision("points", cfg.version, "refund_clawback", f"member:{member.member_ref}",
                    {"order_ref": order_ref, "earned": earned, "paid_fen": paid, "refunded_fen": refunded},
                    {"clawback": take, "cuts": cuts})
    return [{"rule": "points.refund_clawback", "points": -take, "cut": due - take, "cuts": cuts,
             "reason": reason}]


# ---- redemption ---------------------------------------------------------------------------------

def _redemption_dict(r):
    return {"redemption_id": r.redemption_id, "member_id": r.member_ref, "points": r.points,
            "purpose": r.purpose, "status": r.status, "reason": r.reason, "policy_version": r.policy_version,
            "journal": r.journal, "at": timefmt.iso(r.at), "decided_at": timefmt.iso(r.decided_at),
            "decided_by": r.decided_by}


def _check_redemption_caps(cfg, member_ref, points, at, st=LIVE):
    """Lock and check every redemption cap; raises 422 naming the cap that refuses."""
    red = cfg.points.get("redemption") or {}
    rows = []
    for cap in red.get("caps") or []:
        window = mp.window_key(cfg, at, cap.get("window", "day"))
        row = st.counter(member_ref, f"redeem:{cap['name']}", window)
        if cap.get("max_count") is not None and row.count + 1 > int(cap["max_count"]):
            raise Problem(422, "redemption-limit-exceeded", "Redemption limit exceeded",
                          f"cap {cap['name']}: at most {cap['max_count']} redemptions per {cap.get('window', 'day')}",
                          cap=cap["name"], window=window, limit_count=int(cap["max_count"]), used_count=row.count)
        if cap.get("max_points") is not None and row.amount + points > int(cap["max_points"]):
            raise Problem(422, "redemption-limit-exceeded", "Redemption limit exceeded",
                          f"cap {cap['name']}: at most {cap['max_points']} points per {cap.get('window', 'day')}",
                          cap=cap["name"], window=window, limit_points=int(cap["max_points"]), used_points=row.amount,
                          allowed_points=max(0, int(cap["max_points"]) - row.amount))
        rows.append(row)
    return rows


def redeem(member_ref, redemption_id, points, purpose, actor):
    """Spend points (earliest-expiring lots first, in the ledger) within the redemption caps.

    Large redemptions (policy ``redemption.review_above``) are held for review and spend nothing yet.
    Idempotent by ``redemption_id``.

    Returns:
        (created, redemption dict).
    """
    cfg = mp.current()
    at = clock.now()

    @transactional()
    def run():
        return redeem_in(cfg, member_ref, redemption_id, points, purpose, actor, at)
    return run()


def redeem_in(cfg, member_ref, redemption_id, points, purpose, actor, at, st=LIVE):
    """A redemption decided and booked in the caller's transaction (live) or in a simulation's state."""
    existing = st.redemption(redemption_id)
    if existing:
        if existing.member_ref != member_ref or existing.points != points:
            raise Problem(409, "redemption-id-reused", "Redemption id reused",
                          f"redemption {redemption_id!r} exists with another member or amount")
        return False, _redemption_dict(existing)
    st.member(cfg, member_ref, at)
    existing = st.redemption(redemption_id)
    if existing:
        return False, _redemption_dict(existing)
    rows = _check_redemption_caps(cfg, member_ref, points, at, st)
    review_above = (cfg.points.get("redemption") or {}).get("review_above")
    if review_above is not None and points > int(review_above):
        r = st.add_redemption(dict(redemption_id=redemption_id, member_ref=member_ref, points=points,
                                   purpose=purpose, status="held",
                                   reason=f"above review threshold {review_above} (points.redemption.review_above)",
                                   policy_version=cfg.version, at=at))
        if st.keeps_decisions:
            st.decision("points", cfg.version, "redemption.review_above", f"member:{member_ref}",
                        {"points": points}, {"status": "held"})
        return True, _redemption_dict(r)
    journal = st.spend_points(cfg, member_ref, points, f"redeem:{redemption_id}", actor,
                              f"redemption {redemption_id}")
    st.charge(rows, points)
    r = st.add_redemption(dict(redemption_id=redemption_id, member_ref=member_ref, points=points, purpose=purpose,
                               status="done", policy_version=cfg.version, journal=journal, at=at))
    st.points_award(dict(member_ref=member_ref, entry_key=f"redeem:{redemption_id}", kind="redeem",
                         points=-points, rule="points.redemption", policy_version=cfg.version,
                         reason=f"redeemed for {purpose or 'unspecified'}", journal=journal, at=at), later=False)
    return True, _redemption_dict(r)


def decide(member_ref, redemption_id, approve, actor, note=None):
    """Approve (spend now, caps re-checked) or reject a held redemption; exactly once."""
    cfg = mp.current()
    at = clock.now()

    @transactional()
    def run():
        LIVE.member(cfg, member_ref, at)
        r = for_update(Redemption.select().where((Redemption.redemption_id == redemption_id)
                                                 & (Redemption.member_ref == member_ref))).get_or_none()
        if r is None:
            raise Problem(404, "redemption-not-found", "Redemption not found",
                          f"redemption {redemption_id!r} of member {member_ref!r} does not exist")
        wanted = "done" if approve else "rejected"
        if r.status != "held":
            if r.status == wanted:
                return _redemption_dict(r)
            raise Problem(409, "redemption-already-decided", "Redemption already decided",
                          f"redemption {redemption_id!r} is {r.status}")
        journal = None
        if approve:
            rows = _check_redemption_caps(cfg, member_ref, r.points, at)
            journal = ml.spend_points(cfg, member_ref, r.points, f"redeem:{redemption_id}", actor,
                                      f"redemption {redemption_id} (approved)")
            LIVE.charge(rows, r.points)
            PointsAward.create(member_ref=member_ref, entry_key=f"redeem:{redemption_id}", kind="redeem",
                               points=-r.points, rule="points.redemption.review", policy_version=cfg.version,
                               reason=f"redeemed for {r.purpose or 'unspecified'} after review by {actor}",
                               journal=journal, at=at)
        Redemption.update(status=wanted, journal=journal, decided_at=at, decided_by=actor,
                          reason=(r.reason or "") + (f"; {note}" if note else "")).where(Redemption.id == r.id).execute()
        mp.record_decision("points", cfg.version, "redemption.review", f"member:{member_ref}",
                           {"redemption_id": redemption_id, "points": r.points}, {"status": wanted, "by": actor})
        return _redemption_dict(Redemption.get_by_id(r.id))
    return run()
