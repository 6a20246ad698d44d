"""Growth value (成长值): awards by rule with caps and paid multipliers, refund claw-back, periodic deduction, re-levelling."""
import datetime as dt
import logging

from app.db import transactional
from app.errors import Problem

from app.models.membership import Member
from app.services.membership import policy as mp
from app.services.membership.state import LIVE
from app.platform import timefmt

log = logging.getLogger(__name__)


# ---- members ------------------------------------------------------------------------------------

def lock_member(cfg, member_ref, at, st=LIVE):
    """The member, created on first sight and locked for the rest of the transaction (see LiveState.member)."""
    return st.member(cfg, member_ref, at)


def get_member(member_ref):
    member = Member.get_or_none(Member.member_ref == member_ref)
    if member is None:
        raise Problem(404, "member-not-found", "Member not found", f"member {member_ref!r} does not exist")
    return member


# ---- caps ---------------------------------------------------------------------------------------

def _cap_matches(cap, event):
    types = cap.get("event_types") or ([cap["event_type"]] if cap.get("event_type") else None)
    if types and event["type"] not in types:
        return False
    channels = cap.get("channels") or ([cap["channel"]] if cap.get("channel") else None)
    if channels and event.get("channel") not in channels:
        return False
    return True


def counter(scope, cap, window, lock=True, st=LIVE):
    """The usage counter of (scope, cap, window), created if missing (locked when asked)."""
    return st.counter(scope, cap, window, lock)


def apply_caps(cfg, prefix, caps, scope, event, amount, at, max_field="max", st=LIVE):
    """Cut ``amount`` by every matching cap; returns (granted, cuts, counters to charge).

    Each cut names the cap, its window, its limit, what was already used and how much it removed.
    """
    cuts, touched = [], []
    for cap, name, window, limit in cfg.matching_caps(prefix, caps, event, _cap_matches, max_field):
        window = mp.window_key(cfg, at, window)
        row = st.counter(scope, name, window)
        allowed = max(0, limit - row.amount)
        if amount > allowed:
            cuts.append({"cap": cap["name"], "window": window, "limit": limit, "used": row.amount,
                         "cut": amount - allowed})
            amount = allowed
        touched.append(row)
    return amount, cuts, touched


def charge_counters(rows, amount, count=1, st=LIVE):
    st.charge(rows, amount, count)


# ---- journal ------------------------------------------------------------------------------------

def _append(st, member, kind, delta, cut, entry_key, rule, version, reason, at, event_id=None, order_ref=None):
    member.growth += delta
    st.growth_entry(dict(member_ref=member.member_ref, entry_key=entry_key, kind=kind, delta=delta,
                                  balance_after=member.growth, cut=cut, event_id=event_id, order_ref=order_ref,
                                  rule=rule, policy_version=version, reason=reason, at=at))
    return {"rule": rule, "kind": kind, "delta": delta, "cut": cut, "balance_after": member.growth,
            "reason": reason}


# ---- events -------------------------------------------------------------------------------------

def apply_event(cfg, member, event, facts, at, plan, st=LIVE):
    """Growth changes caused by one event (member row locked by the caller).

    Args:
        cfg: membership Config.
        member: locked Member row (mutated: growth).
        event: the event dict (event_id, type, amount_fen, order_ref, channel).
        facts: rule facts.
        at: business time (naive UTC).
        plan: the member's active plan dict at ``at`` or None.

    Returns:
        {"delta", "balance", "entries"}.
    """
    if event["type"] == "order_refunded":
        entries = _clawback(cfg, member, event, at, st)
    else:
        entries = _award(cfg, member, event, facts, at, plan, st)
    return {"delta": sum(e["delta"] for e in entries), "balance": member.growth, "entries": entries}


def _award(cfg, member, event, facts, at, plan, st):
    matches, version = mp.evaluate(cfg.growth_ruleset, facts, cfg.ps)
    entries = []
    for match in matches:
        for action in match.actions:
            if action.get("action") != "award_growth":
                continue
            base = int(action.get("amount", 0))
            if "per_yuan" in action:
                base += (event.get("amount_fen") or 0) * int(action["per_yuan"]) // 100
            amount, reason = base, f"{event['type']} by rule {match.rule}"
            multiplier = int((plan or {}).get("growth_multiplier_pct", 100)) if cfg.mode == "ladder" else 100
            if multiplier != 100 and amount > 0:
                amount = amount * multiplier // 100
                reason += f" x{multiplier}% ({plan['name']})"
            granted, cuts, rows = apply_caps(cfg, "growth", cfg.growth_caps, member.member_ref, event,
                                             amount, at, st=st)
            if granted == 0 and not cuts:
                continue
            st.charge(rows, granted)
            if cuts:
                reason += "; capped by " + ", ".join(f"{c['cap']} (-{c['cut']})" for c in cuts)
            entry = _append(st, member, "earn", granted, amount - granted, f"g:{event['event_id']}:{match.rule}",
                            match.rule, version, reason, at, event["event_id"], event.get("order_ref"))
            entry["cuts"] = cuts
            entry["base"] = base
            entry["multiplier_pct"] = multiplier
            entries.append(entry)
            if st.keeps_decisions:
                st.decision(cfg.growth_ruleset, version, match.rule, f"member:{member.member_ref}",
                            {"event_id": event["event_id"], "type": event["type"],
                             "amount_fen": event.get("amount_fen")},
                            {"award_growth": granted, "base": base, "multiplier_pct": multiplier,
                             "cuts": cuts})
    return entries


def order_totals(order_ref, member_ref, st=LIVE):
    """(paid_fen, refunded_fen) of an order from the stored events of the member."""
    return st.order_totals(order_ref, member_ref)


def clawback_target(earned, paid_fen, refunded_fen):
    """Cumulative claw-back after a refund: the refunded share of what the order earned (floor)."""
    if paid_fen <= 0 or earned <= 0:
        return 0
    return earned * min(refunded_fen, paid_fen) // paid_fen


def _clawback(cfg, member, event, at, st=LIVE):
    if not cfg.refund_clawback or not event.get("order_ref"):
        return []
    order_ref = event["order_ref"]
    paid, refunded = st.order_totals(order_ref, member.member_ref)
    refunded += event.get("amount_fen") or 0  # this event is stored after processing
    earned, already = st.growth_of_order(member.member_ref, order_ref)
    due = clawback_target(earned, paid, refunded) - already
    if due <= 0:
        return []
    take = min(due, member.growth)
    reason = f"refund of {event.get('amount_fen', 0)} fen on order {order_ref} (paid {paid}, refunded {refunded})"
    if take < due:
        reason += f"; growth floor 0 cut {due - take}"
    entry = _append(st, member, "clawback", -take, due - take, f"g:{event['event_id']}:refund_clawback",
                    "membership.growth.refund_clawback", cfg.version, reason, at, event["event_id"], order_ref)
    if st.keeps_decisions:
        st.decision("membership", cfg.version, "growth.refund_clawback", f"member:{member.member_ref}",
                    {"event_id": event["event_id"], "order_ref": order_ref, "paid_fen": paid,
                     "refunded_fen": refunded, "earned": earned}, {"clawback": take, "cut": due - take})
    return [entry]


# ---- levels -------------------------------------------------------------------------------------

def relevel(cfg, member, at, reason, event_id=None, allow_demotion=True, st=LIVE):
    """Set the member's level from the growth value; returns the change dict or None.

    Demotion is skipped while ``level_valid_until`` is in the future (policy
    ``deduction.no_demotion_within_months``) or when ``allow_demotion`` is False.
    """
    target, idx = cfg.level_for(member.growth)
    current = member.level
    if target == current:
        return None
    cur_idx = cfg.level_index(current) if current in cfg.level_names else -1
    demotion = idx < cur_idx
    if demotion and (not allow_demotion or (member.level_valid_until and member.level_valid_until > at)):
        return None
    rule = f"membership.levels[{idx}] threshold {cfg.levels[idx]['threshold']}"
    months = int(cfg.deduction.get("no_demotion_within_months") or 0)
    member.level, member.level_since = target, at
    member.level_valid_until = (mp.to_utc(mp.add_months(mp.local(cfg, at), months))
                                if months and not demotion else None)
    kind = "demotion" if demotion else "promotion"
    text = f"{kind}: growth {member.growth} -> {target}; {reason}"
    st.level_change(dict(member_ref=member.member_ref, from_level=current, to_level=target, growth=member.growth,
                         reason=text, rule=rule, policy_version=cfg.version, event_id=event_id, at=at))
    if st.keeps_decisions:
        st.decision("membership", cfg.version, rule, f"member:{member.member_ref}",
                    {"growth": member.growth, "from": current}, {"level": target, "kind": kind})
    return {"from": current, "to": target, "kind": kind, "reason": text, "rule": rule}


def finish(cfg, member, at, reason, event_id=None, st=LIVE):
    change = relevel(cfg, member, at, reason, event_id, st=st)
    st.save_member(member)
    return change


# ---- periodic deduction -------------------------------------------------------------------------

def _last_due(cfg, member, at):
    """The most recent deduction instant <= at for this member (naive UTC), or None."""
    d = cfg.deduction
    schedule = d.get("schedule", "calendar")
    if schedule == "calendar":  # the same instant for every member: worked out once per local date (Config)
        day = cfg.local_date(at)
        due = cfg._deduction_due.get(day, _UNSEEN)
        if due is _UNSEEN:
            mm, dd = (int(x) for x in d.get("date", "01-01").split("-"))
            due = cfg._deduction_due[day] = _latest(cfg, mm, dd, mp.local(cfg, at))
    else:
        loc = mp.local(cfg, at)
        if schedule == "monthly":  # the start of this month (a monthly reset)
            due = mp.to_utc(loc.replace(day=1, hour=0, minute=0, second=0, microsecond=0))
        else:  # the member's anniversary
            j = mp.local(cfg, member.joined_at)
            due = _latest(cfg, j.month, j.day, loc)
    return due if due is not None and due > member.joined_at else None


_UNSEEN = object()


def _latest(cfg, mm, dd, loc):
    """The latest local midnight of month-day ``mm-dd`` at or before ``loc`` (this year's or last), naive UTC.

    Aware times of one zone compare by wall clock, so the answer depends on ``loc``'s local date only.
    """
    for year in (loc.year, loc.year - 1):
        try:
            due = dt.datetime(year, mm, dd, tzinfo=cfg.tz)
        except ValueError:  # 29 Feb anniversary in a common year: 1 Mar
            due = dt.datetime(year, 3, 1, tzinfo=cfg.tz)
        if due <= loc:
            return mp.to_utc(due)
    return None


def deduction_amount(cfg, member, due, st=LIVE):
    """How much growth the deduction at ``due`` removes, and the rule that says so."""
    d = cfg.deduction
    method = d.get("method")
    if method == "fixed_per_level":
        amount = int((d.get("fixed_per_level") or {}).get(member.level, 0))
        rule = f"membership.deduction.fixed_per_level.{member.level}"
    elif method == "percentage":
        amount = member.growth * int(d["percentage"]) // 100
        rule = f"membership.deduction.percentage {d['percentage']}%"
    elif method == "weighted_window":
        weights = d["window_weights"]
        keep, end = 0, due
        due_local = mp.local(cfg, due)
        for i, w in enumerate(weights):
            start = mp.to_utc(due_local.replace(year=due_local.year - i - 1))
            keep += st.earned_between(member.member_ref, start, end) * int(w) // 100
            end = start
        amount = member.growth - max(0, keep)
        rule = f"membership.deduction.weighted_window {weights}"
    elif method == "reset":  # keep only what was earned from the due instant on (job timing does not matter)
        amount = member.growth - max(0, st.earned_between(member.member_ref, due, dt.datetime.max))
        rule = "membership.deduction.reset"
    else:
        return 0, "membership.deduction.none"
    return max(0, min(amount, member.growth)), rule


def deduct(cfg, member, at, st=LIVE):
    """Apply the member's latest due deduction (once per due date) and re-level; returns a summary or None."""
    due = _last_due(cfg, member, at)
    if due is None:
        return None
    key = f"deduct:{member.member_ref}:{mp.local(cfg, due).date().isoformat()}"
    if st.has_growth_entry(key):
        return None
    amount, rule = deduction_amount(cfg, member, due, st)
    reason = f"periodic deduction due {timefmt.iso(due)} ({cfg.deduction.get('method')})"
    entry = _append(st, member, "deduct", -amount, 0, key, rule, cfg.version, reason, due)
    if st.keeps_decisions:
        st.decision("membership", cfg.version, rule, f"member:{member.member_ref}",
                    {"growth_before": member.growth + amount, "level": member.level, "due": timefmt.iso(due)},
                    {"deduct": amount})
    change = relevel(cfg, member, due, f"after deduction of {amount}", st=st)
    st.save_member(member)
    return {"member_id": member.member_ref, "deducted": amount, "growth": member.growth,
            "level_change": change, "entry": entry}


def deduct_member(cfg, member_ref, at):
    """The live deduction of one member, in its own transaction (member row locked)."""
    @transactional()
    def run():
        member = LIVE.existing_member(member_ref)
        if member is None:
            raise Member.DoesNotExist(member_ref)
        return deduct(cfg, member, at)
    return run()


def deduct_all(at, batch=500, cfg=None, st=None, progress=None):
    """Deduct every member whose deduction is due at ``at``; returns counts.

    Live (no ``st``): each member in its own transaction; a simulation passes its state and Config.
    ``progress(done, total)`` is told after each member.
    """
    cfg = cfg or mp.current()
    if not cfg.deduction.get("method"):
        return {"members": 0, "deducted": 0, "demoted": 0}
    done = demoted = total = 0
    refs = list((st or LIVE).member_refs())
    for i, ref in enumerate(refs, 1):
        out = deduct_member(cfg, ref, at) if st is None else deduct(cfg, st.existing_member(ref), at, st)
        if progress is not None:
            progress(i, len(refs))
        if out:
            done += 1
            total += out["deducted"]
            if out["level_change"] and out["level_change"]["kind"] == "demotion":
                demoted += 1
    return {"members": done, "deducted": total, "demoted": demoted}
