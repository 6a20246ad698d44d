"""Points mall (积分商城): catalogue from policy, redemption issuing the item with the points spend, caps, stock, cancel."""
import datetime as dt
import json

from app import policy
from app.db import db, for_update, transactional
from app.errors import Problem
from app.models.membership import BenefitGrant, MallRedemption, MallStock, MemberVoucher, PointsAward
from app.platform import clock, timefmt
from app.services.membership import ledger_port as ml
from app.services.membership import policy as mp

ASSET = {"voucher": "VOUCHER", "red_packet": "RED_PACKET"}


class MallConfig:
    """The ``mall`` policy document of one set (absent: an empty mall, default checkout rules)."""

    def __init__(self, ps):
        docs = ps.get("mall")
        self.doc = docs[0] if docs else {}
        self.version = ps.version
        self.items = {i["code"]: i for i in self.doc.get("items") or []}
        self.checkout = self.doc.get("checkout") or {}
        self.refunds = self.doc.get("refunds") or {}
        self.late_events = self.doc.get("late_events") or {}
        self.caps = self.doc.get("caps") or []

    def item(self, code):
        item = self.items.get(code)
        if item is None:
            raise Problem(404, "mall-item-not-found", "Mall item not found",
                          f"no mall item {code!r}; offered: {sorted(self.items)}")
        return item


def current():
    return policy.derived("membership.mall", MallConfig)


def cross_check_errors(ps):
    """Mall items must name existing levels, plans and (service items) benefits of the catalogue."""
    errs = []
    docs = ps.get("mall")
    if not docs:
        return errs
    doc, mf = docs[0], docs[0].get("_file")
    m = (ps.get("membership") or [{}])[0]
    levels = {lv.get("name") for lv in m.get("levels") or []}
    plans = {p.get("code") for p in ((ps.get("plans") or [{}])[0].get("plans") or [])}
    catalogue = {b.get("name") for b in ((ps.get("benefits") or [{}])[0].get("catalogue") or [])}
    codes = [i.get("code") for i in doc.get("items") or []]
    if len(set(codes)) != len(codes):
        errs.append((mf, "$.items", "item codes must be unique"))
    for n, item in enumerate(doc.get("items") or []):
        for lv in item.get("levels") or []:
            if lv not in levels:
                errs.append((mf, f"$.items[{n}].levels", f"unknown level {lv!r}"))
        for code in item.get("plans") or []:
            if code not in plans:
                errs.append((mf, f"$.items[{n}].plans", f"unknown plan {code!r}"))
        if item.get("type") == "service" and item.get("benefit") not in catalogue:
            errs.append((mf, f"$.items[{n}].benefit", f"unknown benefit {item.get('benefit')!r}"))
    return errs


def _eligible(cfg, item, member, plan):
    """(ok, rule): may this member redeem the item (by level or paid plan)?"""
    levels, plans = item.get("levels"), item.get("plans")
    if not levels and not plans:
        return True, None
    if levels and member.level in levels:
        return True, f"mall.items.{item['code']}.levels"
    if plans and plan and plan.get("code") in plans:
        return True, f"mall.items.{item['code']}.plans"
    return False, f"mall.items.{item['code']}.levels/plans"


def _item_caps(cfg, item, member_ref, points, at, mall_caps=()):
    """Lock and check the mall's caps over all items, then the item's own (member or all members, per
    window); refuse naming every cap that cuts."""
    from app.services.membership.growth import counter
    rows, refused = [], []
    for where, cap in [("*", c) for c in mall_caps] + [(item["code"], c) for c in item.get("caps") or []]:
        window = mp.window_key(cfg, at, cap.get("window", "day"))
        scope = member_ref if cap.get("scope", "member") == "member" else "*"
        row = counter(scope, f"mall:{where}:{cap['name']}", window)
        if cap.get("max_count") is not None and row.count + 1 > int(cap["max_count"]):
            refused.append({"cap": cap["name"], "scope": cap.get("scope", "member"), "window": window,
                            "limit_count": int(cap["max_count"]), "used_count": row.count,
                            "rule": _cap_rule(where, cap)})
        if cap.get("max_points") is not None and row.amount + points > int(cap["max_points"]):
            refused.append({"cap": cap["name"], "scope": cap.get("scope", "member"), "window": window,
                            "limit_points": int(cap["max_points"]), "used_points": row.amount,
                            "rule": _cap_rule(where, cap)})
        rows.append(row)
    if refused:
        raise Problem(422, "redemption-limit-exceeded", "Redemption limit exceeded",
                      "; ".join(f"cap {c['cap']} ({c['scope']}, {c['window']}) is used up" for c in refused),
                      cap=refused[0]["cap"], caps=refused, item=item["code"])
    return rows


def _cap_rule(where, cap):
    return f"mall.caps.{cap['name']}" if where == "*" else f"mall.items.{where}.caps.{cap['name']}"


def _take_stock(item):
    """Take one unit; False when sold out. A conditional UPDATE: concurrent takes can never oversell."""
    p = db.obj.param
    MallStock.insert(item=item["code"], sold=0).on_conflict_ignore().execute()
    cur = db.execute_sql(f'UPDATE "mall_stock" SET "sold" = "sold" + 1 WHERE "item" = {p} AND "sold" + 1 <= {p}',
                         (item["code"], int(item["stock"])))
    return cur.rowcount == 1


def _sold(code):
    row = MallStock.get_or_none(MallStock.item == code)
    return row.sold if row else 0


def catalogue(member_ref=None):
    """Mall items with stock left and, for a member, whether they may redeem each (and why not)."""
    cfg, mall = mp.current(), current()
    member = plan = None
    if member_ref:
        from app.models.membership import Member
        from app.services.membership import plans as mplans
        member = Member.get_or_none(Member.member_ref == member_ref)
        plan = mplans.active_plan(cfg, member_ref, clock.now())
    out = []
    for code, item in mall.items.items():
        d = {k: v for k, v in item.items() if k != "caps"}
        d["stock_left"] = max(0, int(item["stock"]) - _sold(code))
        d["caps"] = item.get("caps") or []
        d["rule"] = f"mall.items.{code}"
        if member_ref:
            ok, rule = _eligible(cfg, item, member, plan) if member else (not item.get("levels")
                                                                        and not item.get("plans"), None)
            d["eligible"], d["eligibility_rule"] = ok, rule
        out.append(d)
    return {"policy_version": mall.version, "items": out, "mall_caps": mall.caps,
            "redemption_caps": (cfg.points.get("redemption") or {}).get("caps") or []}


def redemption_dict(r):
    return {"redemption_id": r.redemption_id, "member_id": r.member_ref, "item": r.item, "type": r.item_type,
            "points": r.points, "status": r.status, "issued": json.loads(r.issued or "{}"),
            "spend_journal": r.spend_journal, "rule": r.rule, "policy_version": r.policy_version,
            "reason": r.reason, "at": timefmt.iso(r.at), "decided_at": timefmt.iso(r.decided_at), "decided_by": r.decided_by}


def redeem(member_ref, redemption_id, item_code, actor):
    """Redeem points for a mall item, exactly once per ``redemption_id``.

    In one transaction: the member is locked, eligibility checked, the points redemption caps
    (``points.redemption.caps``, shared with plain redemptions) and the item's own caps checked and
    charged, one unit of stock taken (never oversold), the points spent (a recorded lot spend, so a
    cancellation returns them to the same lots) and the item issued: a voucher or red packet as a
    ledger lot with its own expiry, a service as a benefit in force, goods as a fulfilment record.

    Returns:
        (created, redemption dict).

    Raises:
        Problem: mall-item-not-found (404), mall-not-eligible (403), redemption-limit-exceeded (422,
            names every cap that refused), mall-out-of-stock (409), insufficient-funds (409).
    """
    from app.services.membership.growth import charge_counters, lock_member
    from app.services.membership.plans import active_plan
    from app.services.membership.points import _check_redemption_caps
    cfg, mall = mp.current(), current()
    item = mall.item(item_code)
    at = clock.now()
    points = int(item["price_points"])

    def replay(existing):
        if existing.member_ref != member_ref or existing.item != item_code:
            raise Problem(409, "redemption-id-reused", "Redemption id reused",
                          f"redemption {redemption_id!r} exists with another member or item")
        return False, redemption_dict(existing)

    @transactional()
    def run():
        existing = MallRedemption.get_or_none(MallRedemption.redemption_id == redemption_id)
        if existing:
            return replay(existing)
        member = lock_member(cfg, member_ref, at)
        existing = MallRedemption.get_or_none(MallRedemption.redemption_id == redemption_id)
        if existing:
            return replay(existing)
        plan = active_plan(cfg, member_ref, at)
        ok, rule = _eligible(cfg, item, member, plan)
        if not ok:
            raise Problem(403, "mall-not-eligible", "Not eligible for this item",
                          f"item {item_code!r} is for levels {item.get('levels') or []} or plans "
                          f"{item.get('plans') or []}; member is {member.level}"
                          + (f" on {plan['code']}" if plan else ""), rule=rule)
        rows = _check_redemption_caps(cfg, member_ref, points, at)
        rows += _item_caps(cfg, item, member_ref, points, at, mall.caps)
        if not _take_stock(item):
            raise Problem(409, "mall-out-of-stock", "Out of stock", f"item {item_code!r} is sold out",
                          item=item_code, stock=int(item["stock"]), rule=f"mall.items.{item_code}.stock")
        key = f"mall:{redemption_id}"
        journal, _ = ml.spend_lots(member_ref, cfg.points_asset, points, key, actor,
                                   f"mall {item_code} ({redemption_id})")
        charge_counters(rows, points)
        issued, status = _issue(cfg, item, member_ref, redemption_id, at, actor)
        r = MallRedemption.create(redemption_id=redemption_id, member_ref=member_ref, item=item_code,
                                  item_type=item["type"], points=points, status=status, spend_journal=int(journal),
                                  issued=json.dumps(issued, ensure_ascii=False), rule=f"mall.items.{item_code}",
                                  policy_version=cfg.version, reason=f"redeemed {item['name']} for {points} points",
                                  at=at)
        PointsAward.create(member_ref=member_ref, entry_key=key, kind="redeem", points=-points,
                           rule=f"mall.items.{item_code}", policy_version=cfg.version,
                           reason=f"points mall: {item['name']}", journal=journal, at=at)
        mp.record_decision("mall", cfg.version, f"mall.items.{item_code}", f"member:{member_ref}",
                           {"redemption_id": redemption_id, "points": points, "level": member.level,
                            "plan": plan.get("code") if plan else None, "eligibility_rule": rule},
                           {"status": status, "issued": issued})
        return True, redemption_dict(r)
    return run()


def _issue(cfg, item, member_ref, redemption_id, at, actor):
    kind = item["type"]
    until = at + dt.timedelta(days=int(item["valid_days"])) if item.get("valid_days") else None
    if kind in ASSET:
        voucher = grant_voucher(member_ref, kind, item, until, f"mall-issue:{redemption_id}", actor,
                                f"mall:{item['code']}", redemption_id, at)
        return {"voucher_id": voucher.id, "lot_id": voucher.lot_id, "amount_fen": voucher.amount_fen,
                "expires_at": timefmt.iso(until)}, "issued"
    if kind == "service":
        g = BenefitGrant.create(member_ref=member_ref, benefit=item["benefit"], source=f"mall:{redemption_id}",
                                starts_at=at, ends_at=until)
        return {"benefit": item["benefit"], "grant_id": g.id, "until": timefmt.iso(until)}, "issued"
    return {"fulfilment": "pending"}, "pending_fulfilment"


def grant_voucher(member_ref, kind, spec, expires_at, key, actor, source, source_ref, at):
    """Issue a voucher / red packet: its ledger lot and the member's record of it (threshold, categories)."""
    asset = ASSET[kind]
    journal, lot_id = ml.grant_lot(member_ref, asset, int(spec["amount_fen"]), expires_at, key, actor,
                                   f"{spec.get('name') or spec.get('description') or source} ({source})")
    existing = MemberVoucher.get_or_none(MemberVoucher.lot_id == lot_id)
    if existing:  # the ledger replayed the grant (same key): the record exists too
        existing.journal = journal
        return existing
    cats = spec.get("categories")
    voucher = MemberVoucher.create(member_ref=member_ref, kind=kind, asset=asset, lot_id=lot_id,
                                amount_fen=int(spec["amount_fen"]), min_order_fen=int(spec.get("min_order_fen", 0)),
                                categories=json.dumps(cats, ensure_ascii=False) if cats else None,
                                name=spec.get("description") or spec.get("name") or source, source=source,
                                source_ref=source_ref, expires_at=expires_at, at=at)
    voucher.journal = journal
    return voucher


def _lock_redemption(member_ref, redemption_id):
    r = for_update(MallRedemption.select().where((MallRedemption.redemption_id == redemption_id)
                                                 & (MallRedemption.member_ref == member_ref))).get_or_none()
    if r is None:
        raise Problem(404, "redemption-not-found", "Redemption not found",
                      f"mall redemption {redemption_id!r} of member {member_ref!r} does not exist")
    return r


def cancel(member_ref, redemption_id, actor, note=None):
    """Cancel goods not yet fulfilled: points back to their original lots (extension if expired), stock back."""
    from app.services.membership.growth import lock_member
    cfg, mall = mp.current(), current()
    at = clock.now()

    @transactional()
    def run():
        lock_member(cfg, member_ref, at)
        r = _lock_redemption(member_ref, redemption_id)
        if r.status == "cancelled":
            return redemption_dict(r)
        if r.status != "pending_fulfilment":
            raise Problem(409, "redemption-not-cancellable", "Redemption not cancellable",
                          f"mall redemption {redemption_id!r} is {r.status}: only goods not yet fulfilled "
                          "can be cancelled", state=r.status)
        ext = int(mall.refunds.get("expired_extension_days") or 0)
        back = ml.refund_lot_spend(member_ref, r.spend_journal, r.points, f"mall-cancel:{redemption_id}", actor,
                                   f"mall cancel {redemption_id}",
                                   expired_until=at + dt.timedelta(days=ext) if ext else None)
        db.execute_sql(f'UPDATE "mall_stock" SET "sold" = "sold" - 1 WHERE "item" = {db.obj.param}', (r.item,))
        issued = dict(json.loads(r.issued or "{}"), returned=back["lots"])
        MallRedemption.update(status="cancelled", decided_at=at, decided_by=actor, issued=json.dumps(issued),
                              reason=(r.reason or "") + "; cancelled" + (f": {note}" if note else "")) \
            .where(MallRedemption.id == r.id).execute()
        PointsAward.create(member_ref=member_ref, entry_key=f"mall-cancel:{redemption_id}", kind="refund",
                           points=r.points, rule="mall.cancel", policy_version=cfg.version,
                           reason=f"mall redemption {redemption_id} cancelled before fulfilment",
                           journal=back["journal"], at=at)
        mp.record_decision("mall", cfg.version, "mall.cancel", f"member:{member_ref}",
                           {"redemption_id": redemption_id, "points": r.points, "extension_days": ext},
                           {"status": "cancelled", "points_back": back["lots"]})
        return redemption_dict(MallRedemption.get_by_id(r.id))
    return run()


def fulfil(member_ref, redemption_id, actor, note=None):
    """Mark goods shipped (no cancellation after this)."""
    cfg = mp.current()
    at = clock.now()

    @transactional()
    def run():
        r = _lock_redemption(member_ref, redemption_id)
        if r.status == "fulfilled":
            return redemption_dict(r)
        if r.status != "pending_fulfilment":
            raise Problem(409, "redemption-not-fulfillable", "Redemption not fulfillable",
                          f"mall redemption {redemption_id!r} is {r.status}", state=r.status)
        issued = dict(json.loads(r.issued or "{}"), fulfilment="shipped", note=note)
        MallRedemption.update(status="fulfilled", decided_at=at, decided_by=actor, issued=json.dumps(issued)) \
            .where(MallRedemption.id == r.id).execute()
        mp.record_decision("mall", cfg.version, "mall.fulfil", f"member:{member_ref}",
                           {"redemption_id": redemption_id}, {"status": "fulfilled"})
        return redemption_dict(MallRedemption.get_by_id(r.id))
    return run()


def granted_benefits(cfg, member_ref, at):
    """Catalogue benefits granted outside level and plan that are in force at ``at`` (mall services)."""
    out = []
    for g in BenefitGrant.select().where((BenefitGrant.member_ref == member_ref) & (BenefitGrant.starts_at <= at)
                                         & (BenefitGrant.ends_at > at)):
        if g.benefit in cfg.catalogue:
            out.append(dict(cfg.catalogue[g.benefit], source=g.source, rule=f"mall grant {g.source}",
                            until=timefmt.iso(g.ends_at), version=cfg.version))
    return out
