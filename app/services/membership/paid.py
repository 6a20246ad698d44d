"""The paid ladder (付费会员等级): paid levels by months or amount paid, their benefits, upgrade offers."""
from app.services.membership.state import LIVE


def _ladder(cfg):
    return cfg.plans_doc.get("paid_ladder") or {}


def paid_so_far(cfg, member_ref, at, st=LIVE):
    """(months paid, fen paid) over every paid period started by ``at``."""
    months = fen = 0
    for code, (n, total) in sorted(st.paid_periods(member_ref, at).items()):
        months += int(n) * int((cfg.plans.get(code) or {}).get("period_months", 1))
        fen += int(total or 0)
    return months, fen


def status(cfg, member_ref, at, plan=None, st=LIVE):
    """The member's place on the paid ladder, its benefits (while a plan is active) and the next step.

    Returns:
        {"ladder": {...} | None, "benefits": [...], "offers": [...]}.
    """
    from app.services.membership import plans as mplans
    lad = _ladder(cfg)
    if not lad:
        return {"ladder": None, "benefits": [], "offers": []}
    plan = plan if plan is not None else mplans.active_plan(cfg, member_ref, at, st)
    months, fen = paid_so_far(cfg, member_ref, at, st)
    basis = lad["basis"]
    value = months if basis == "months" else fen
    levels = sorted(lad["levels"], key=lambda lv: lv["threshold"])
    cur = None
    for lv in levels:
        if value >= lv["threshold"]:
            cur = lv
    nxt = next((lv for lv in levels if lv["threshold"] > value), None)
    name = cur["name"] if cur and plan else None
    items = []
    if name:
        for b in (cfg.benefits.get("paid_levels") or {}).get(name) or []:
            items.append(dict(cfg.catalogue[b], source=f"paid_level:{name}", rule=f"benefits.paid_levels.{name}.{b}",
                              version=cfg.version))
    offers = []
    if nxt:
        have = {b["name"] for b in items}
        offers.append({"kind": "paid_level_upgrade", "paid_level": nxt["name"], "basis": basis,
                       "threshold": nxt["threshold"], "needed": nxt["threshold"] - value,
                       "adds": [dict(cfg.catalogue[b], rule=f"benefits.paid_levels.{nxt['name']}.{b}")
                                for b in (cfg.benefits.get("paid_levels") or {}).get(nxt["name"]) or []
                                if b not in have],
                       "rule": "plans.paid_ladder", "policy_version": cfg.version})
    return {"ladder": {"basis": basis, "value": value, "months_paid": months, "paid_fen": fen,
                       "level": name, "earned_level": cur["name"] if cur else None, "active": plan is not None,
                       "next": nxt, "rule": "plans.paid_ladder", "policy_version": cfg.version},
            "benefits": items, "offers": offers}


def with_ladder(cfg, member_ref, plan, at, st=LIVE):
    """The active plan with its paid-level benefits attached (benefits_in_force reads them); None if unpaid."""
    if not plan or not _ladder(cfg):
        return plan
    got = status(cfg, member_ref, at, plan, st)
    return dict(plan, paid_level_benefits=[b["name"] for b in got["benefits"]],
                paid_ladder_level=got["ladder"]["level"])
