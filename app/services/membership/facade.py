"""Membership (会员) public operations: member view, history, offers, facts for other contexts, policy cross-checks,
registration, demo seed (re-exported by the package)."""
import datetime as dt
import json

from app.db import db
from app.engine import actions
from app.errors import Problem
from app.models.membership import GrowthEntry, LevelChange, Member, PointsAward
from app.platform import clock, paging
from app.policy import kinds
from app.services.membership import benefits
from app.services.membership import events
from app.services.membership import ledger_port as ml
from app.services.membership import mall
from app.services.membership import paid
from app.services.membership import plans
from app.services.membership import vouchers
from app.services.membership import policy as mp
from app.platform import timefmt


def _member_or_default(cfg, member_ref):
    """(level, growth) facts of a member for the read-only hot paths (checkout, facts, service benefits).

    Plain SQL: building the equivalent peewee query costs more than the round trip.
    """
    p = db.obj.param
    row = db.execute_sql(f"SELECT level, growth FROM member WHERE member_ref = {p}", (member_ref,)).fetchone()
    if row is None:
        return None, {"member_id": member_ref, "known": False, "level": cfg.levels[0]["name"], "growth": 0}
    return row, {"member_id": member_ref, "known": True, "level": row[0], "growth": int(row[1])}


def user_facts(member_ref):
    """Facts other contexts (ticket routing) read: {"level", "paid", "plan", "growth", "known"}."""
    cfg = mp.current()
    _, facts = _member_or_default(cfg, member_ref)
    plan = plans.active_plan(cfg, member_ref, clock.now())
    return {"level": facts["level"], "paid": plan is not None, "plan": plan.get("code") if plan else None,
            "growth": facts["growth"], "known": facts["known"]}


def service_benefits(member_ref):
    """Service benefits customer service reads: {"priority", "queue", "dedicated_agent", "priority_delivery", "rules"}."""
    cfg = mp.current()
    _, facts = _member_or_default(cfg, member_ref)
    at = clock.now()
    plan = paid.with_ladder(cfg, member_ref, plans.active_plan(cfg, member_ref, at), at)
    out = benefits.service_from(benefits.benefits_in_force(cfg, facts["level"], plan)
                                + mall.granted_benefits(cfg, member_ref, at))
    out["version"] = cfg.version
    return out


def checkout_benefits(member_ref, cart):
    """Discounts, fee waivers, coupons, points to earn and cashback for a cart (read-only)."""
    cfg = mp.current()
    _, facts = _member_or_default(cfg, member_ref)
    at = clock.now()
    plan = paid.with_ladder(cfg, member_ref, plans.active_plan(cfg, member_ref, at), at)
    out = benefits.checkout(cfg, facts, plan, cart)
    out.update(vouchers.for_checkout(member_ref, cart, out))  # vouchers / red packets held, best combination
    return out


def offers(cfg, level, plan, at=None):
    """Paid plans the member could buy and what each would add (the paid upgrade channel)."""
    current = {b["name"] for b in benefits.benefits_in_force(cfg, level, plan)}
    out = []
    for code, p in cfg.plans.items():
        if plan and plan.get("code") == code:
            continue
        adds = [dict(cfg.catalogue[n], rule=f"benefits.plans.{code}.{n}")
                for n in cfg.by_plan.get(code) or [] if n not in current]
        offer = {"plan": code, "name": p["name"], "price_fen": int(p["price_fen"]),
                 "period_months": int(p["period_months"]), "paid_level": p.get("paid_level"), "adds": adds,
                 "policy_version": cfg.version}
        if cfg.mode == "ladder" and p.get("growth_multiplier_pct"):
            offer["growth_multiplier_pct"] = int(p["growth_multiplier_pct"])
        out.append(offer)
    return out


def view(member_ref):
    """The member view: level, growth, progress, points lots, paid status, benefits in force, offers."""
    cfg = mp.current()
    member = Member.get_or_none(Member.member_ref == member_ref)
    if member is None:
        raise Problem(404, "member-not-found", "Member not found", f"member {member_ref!r} does not exist")
    at = clock.now()
    plan = plans.active_plan(cfg, member_ref, at)
    sub = plans.current_subscription(member_ref, at)
    name, idx = cfg.level_for(member.growth)
    cur_idx = cfg.level_index(member.level)
    nxt = cfg.levels[cur_idx + 1] if cur_idx + 1 < len(cfg.levels) else None
    progress = None
    if nxt:
        lo = cfg.levels[cur_idx]["threshold"]
        span = max(1, nxt["threshold"] - lo)
        progress = {"level": nxt["name"], "threshold": nxt["threshold"],
                    "needed": max(0, nxt["threshold"] - member.growth),
                    "progress_pct": max(0, min(100, (member.growth - lo) * 100 // span))}
    lots = ml.points_lots(cfg, member_ref) if cfg.points else []
    items = benefits.benefits_in_force(cfg, member.level, plan)
    return {
        "member_id": member_ref, "joined_at": timefmt.iso(member.joined_at), "policy_version": cfg.version,
        "mode": cfg.mode,
        "level": {"name": member.level, "index": cur_idx, "since": timefmt.iso(member.level_since),
                  "no_demotion_until": timefmt.iso(member.level_valid_until)},
        "growth": member.growth, "next_level": progress,
        # lots come from ledger.lots(): expired ones are already left out, by the clock at this read
        "points": {"balance": sum(int(lot["remaining"] or 0) for lot in lots), "lots": lots},
        "paid": {"active": plan is not None, "plan": plan.get("code") if plan else None,
                 "plan_name": plan.get("name") if plan else None,
                 "paid_level": plan.get("paid_level") if plan else None,
                 "subscription": plans.subscription_dict(sub)},
        "benefits": items, "service": benefits.service_from(items),
        "offers": offers(cfg, member.level, plan, at),
    }


_HISTORY_ORDER = {"level": 0, "points": 1, "growth": 2}  # within one instant, newest first: growth, points, level


def history(member_ref, limit=50, cursor=None):
    """Growth, level and points changes, newest first, each with its reason, rule and policy version.

    Keyset over the three tables on (at, kind, id), so a page never skips or repeats a row.

    Args:
        member_ref: the member id.
        limit: the page size.
        cursor: the ``next_cursor`` of the previous page.

    Returns:
        (items, next_cursor or None).
    """
    if Member.get_or_none(Member.member_ref == member_ref) is None:
        raise Problem(404, "member-not-found", "Member not found", f"member {member_ref!r} does not exist")
    past = None
    if cursor is not None:
        past = paging.decode(cursor, 3)
        if not (isinstance(past[0], dt.datetime) and past[1] in _HISTORY_ORDER.values() and isinstance(past[2], int)):
            raise paging.bad_cursor()
    out = []

    def q(model, kind):
        query = model.select().where(model.member_ref == member_ref)
        if past is not None:
            at, order, row_id = past
            here = _HISTORY_ORDER[kind]
            if here < order:
                query = query.where(model.at <= at)
            elif here == order:
                query = query.where((model.at < at) | ((model.at == at) & (model.id < row_id)))
            else:
                query = query.where(model.at < at)
        return query.order_by(model.at.desc(), model.id.desc()).limit(limit + 1)

    for e in q(GrowthEntry, "growth"):
        out.append({"kind": "growth", "type": e.kind, "delta": e.delta, "balance_after": e.balance_after,
                    "cut": e.cut, "event_id": e.event_id, "order_ref": e.order_ref, "rule": e.rule,
                    "policy_version": e.policy_version, "reason": e.reason, "at": timefmt.iso(e.at),
                    "_key": (e.at, _HISTORY_ORDER["growth"], e.id)})
    for c in q(LevelChange, "level"):
        out.append({"kind": "level", "type": "demotion" if _lower(c) else "promotion", "from": c.from_level,
                    "to": c.to_level, "growth": c.growth, "event_id": c.event_id, "rule": c.rule,
                    "policy_version": c.policy_version, "reason": c.reason, "at": timefmt.iso(c.at),
                    "_key": (c.at, _HISTORY_ORDER["level"], c.id)})
    for p in q(PointsAward, "points"):
        out.append({"kind": "points", "type": p.kind, "delta": p.points, "cut": p.cut, "cuts": json.loads(p.cuts),
                    "event_id": p.event_id, "order_ref": p.order_ref, "rule": p.rule,
                    "policy_version": p.policy_version, "reason": p.reason, "expires_at": timefmt.iso(p.expires_at),
                    "journal": p.journal, "at": timefmt.iso(p.at), "_key": (p.at, _HISTORY_ORDER["points"], p.id)})
    out.sort(key=lambda r: r["_key"], reverse=True)
    page = out[:limit]
    nxt = paging.encode(page[-1]["_key"]) if len(out) > limit else None
    for r in page:
        r.pop("_key")
    return page, nxt


def _lower(change):
    cfg = mp.current()
    return cfg.level_index(change.to_level) < cfg.level_index(change.from_level or change.to_level)


# ---- policy cross-checks and engine actions -----------------------------------------------------

def cross_check_errors(ps):
    """Cross-file problems of the membership kinds as (file, json path, message) tuples."""
    errs = []

    def one(kind):
        docs = ps.get(kind)
        return docs[0] if docs else None

    m, pts, ben, pl = one("membership"), one("points"), one("benefits"), one("plans")
    for kind in ("membership", "points", "benefits", "plans"):
        docs = ps.get(kind)
        if len(docs) > 1:
            errs.append((docs[1].get("_file"), "$", f"only one {kind!r} document allowed, found {len(docs)}"))
    if not m:
        return errs
    mf = m.get("_file")
    levels = m.get("levels") or []
    names = [lv.get("name") for lv in levels]
    for i in range(1, len(levels)):
        if not levels[i].get("threshold", 0) > levels[i - 1].get("threshold", 0):
            errs.append((mf, f"$.levels[{i}].threshold", "level thresholds must strictly ascend "
                         f"({levels[i - 1].get('threshold')} then {levels[i].get('threshold')})"))
    if levels and levels[0].get("threshold") != 0:
        errs.append((mf, "$.levels[0].threshold", "the first level must start at 0"))
    if len(set(names)) != len(names):
        errs.append((mf, "$.levels", "level names must be unique"))
    fixed = ((m.get("deduction") or {}).get("fixed_per_level") or {})
    for lv in fixed:
        if lv not in names:
            errs.append((mf, f"$.deduction.fixed_per_level.{lv}", f"unknown level {lv!r}"))
    rulesets = {d.get("name") for d in ps.get("ruleset")}
    gr = (m.get("growth") or {}).get("ruleset", "growth")
    if gr not in rulesets:
        errs.append((mf, "$.growth.ruleset", f"ruleset {gr!r} does not exist in rules/"))
    if pts and pts.get("ruleset", "points") not in rulesets:
        errs.append((pts.get("_file"), "$.ruleset", f"ruleset {pts.get('ruleset', 'points')!r} does not exist"))
    plan_codes = [p.get("code") for p in (pl or {}).get("plans") or []]
    if len(set(plan_codes)) != len(plan_codes):
        errs.append((pl.get("_file"), "$.plans", "plan codes must be unique"))
    if pl and m.get("mode") == "independent":
        for i, p in enumerate(pl.get("plans") or []):
            if p.get("growth_multiplier_pct") not in (None, 100):
                errs.append((pl.get("_file"), f"$.plans[{i}].growth_multiplier_pct",
                             "independent mode: paid plans do not accelerate growth (remove the multiplier)"))
    if ben:
        bf = ben.get("_file")
        cat = {b.get("name") for b in ben.get("catalogue") or []}
        for lv, items in (ben.get("levels") or {}).items():
            if lv not in names:
                errs.append((bf, f"$.levels.{lv}", f"unknown level {lv!r} (levels: {names})"))
            for j, n in enumerate(items or []):
                if n not in cat:
                    errs.append((bf, f"$.levels.{lv}[{j}]", f"unknown benefit {n!r}"))
        for code, items in (ben.get("plans") or {}).items():
            if code not in plan_codes:
                errs.append((bf, f"$.plans.{code}", f"unknown plan {code!r} (plans: {plan_codes})"))
            for j, n in enumerate(items or []):
                if n not in cat:
                    errs.append((bf, f"$.plans.{code}[{j}]", f"unknown benefit {n!r}"))
    ladder = {lv.get("name") for lv in ((pl or {}).get("paid_ladder") or {}).get("levels") or []}
    for name, items in ((ben or {}).get("paid_levels") or {}).items():
        if name not in ladder:
            errs.append((ben.get("_file"), f"$.paid_levels.{name}", f"unknown paid level {name!r} (plans.paid_ladder)"))
        for j, n in enumerate(items or []):
            if n not in {b.get("name") for b in ben.get("catalogue") or []}:
                errs.append((ben.get("_file"), f"$.paid_levels.{name}[{j}]", f"unknown benefit {n!r}"))
    for doc, key in ((m, "growth"), (pts, None)):
        caps = ((doc or {}).get(key) or {}).get("caps") if key else (doc or {}).get("earning_caps")
        for i, cap in enumerate(caps or []):
            for f in ("max", "max_points"):
                if cap.get(f) is not None and cap[f] < 0:
                    errs.append((doc.get("_file"), f"$..caps[{i}].{f}", "caps must be >= 0"))
    return errs


def _cross_check(ps):
    return list(cross_check_errors(ps))


def register():
    """Membership policy kinds, required rulesets and engine actions; called once by app.contexts."""
    kinds.register("membership", cross_check=_cross_check)
    for kind in ("points", "benefits", "plans"):
        kinds.register(kind)
    kinds.register("mall", cross_check=mall.cross_check_errors)  # optional: no mall file, an empty mall
    kinds.require("membership", "points", "benefits", "plans", rulesets=("growth", "points"))
    amount = {"type": "object", "additionalProperties": False,
              "properties": {"amount": {"type": "integer", "minimum": 0, "maximum": 100000000},
                             "per_yuan": {"type": "integer", "minimum": 0, "maximum": 100000}},
              "anyOf": [{"required": ["amount"]}, {"required": ["per_yuan"]}]}
    actions.register("award_growth", amount)
    actions.register("award_points", amount)



# ---- demo ---------------------------------------------------------------------------------------

def seed_demo():
    """Demo members with orders, a sign-in and a paid monthly card (idempotent by event id and subscription)."""
    demo = [
        {"event_id": "demo-user-order-1", "member_id": "demo-user", "type": "order_paid",
         "amount_fen": 258800, "order_ref": "DEMO-ORDER-1", "channel": "app"},
        {"event_id": "demo-user-signin-1", "member_id": "demo-user", "type": "sign_in", "channel": "app"},
        {"event_id": "demo-member-2-order-1", "member_id": "demo-member-2", "type": "order_paid",
         "amount_fen": 1299900, "order_ref": "DEMO-ORDER-2", "channel": "web"},
    ]
    for ev in demo:
        events.ingest(ev, "system:demo")
    if plans.current_subscription("demo-user") is None and "yule_monthly" in mp.current().plans:
        try:
            plans.subscribe("demo-user", "yule_monthly", "balance", None, True, "system:demo")
        except Problem:  # no cash in the demo ledger: the member stays unpaid
            pass
