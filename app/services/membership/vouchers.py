"""Vouchers and red packets held, applied at checkout with points and cash in one transaction, refunded along the original route."""
import datetime as dt
import json

from app.db import for_update, transactional
from app.errors import Problem
from app.models.membership import MemberOrder, MemberVoucher, OrderRefund, PointsAward
from app.platform import clock, timefmt
from app.services.membership import benefits
from app.services.membership import ledger_port as ml
from app.services.membership import mall as mmall
from app.services.membership import policy as mp

# Order of use at checkout; refunds go back in the reverse order (cash first, points last).
ORDER_OF_USE = ("points", "voucher", "red_packet", "cash")


def _norm(ts):
    """Ledger timestamps (with microseconds) in this context's RFC 3339 form."""
    return timefmt.iso(ts)


def _live(expires_at, at):
    return expires_at is None or dt.datetime.fromisoformat(expires_at.rstrip("Z")) > at


def held(member_ref, at=None):
    """Vouchers and red packets the member holds now: [{voucher_id, kind, name, amount_fen, remaining_fen,
    min_order_fen, categories, expires_at, source}], earliest expiry first (expired and used ones left out)."""
    at = at or clock.now()
    out = []
    if not MemberVoucher.select().where(MemberVoucher.member_ref == member_ref).exists():
        return out  # the common case at checkout: nothing held, no ledger reads
    for kind, asset in mmall.ASSET.items():
        lots = {lot["lot_id"]: lot for lot in ml.lots_of(member_ref, asset) if _live(lot["expires_at"], at)}
        if not lots:
            continue
        for v in MemberVoucher.select().where((MemberVoucher.member_ref == member_ref)
                                              & (MemberVoucher.lot_id.in_(list(lots)))):
            lot = lots[v.lot_id]
            out.append({"voucher_id": v.id, "kind": v.kind, "name": v.name, "amount_fen": v.amount_fen,
                        "remaining_fen": int(lot["remaining"]), "min_order_fen": v.min_order_fen,
                        "categories": json.loads(v.categories) if v.categories else None,
                        "expires_at": _norm(lot["expires_at"]), "lot_id": v.lot_id, "source": v.source})
    out.sort(key=lambda d: (d["expires_at"] is None, d["expires_at"] or "", d["voucher_id"]))
    return out


def _base_for(voucher, cart, goods_payable):
    """What counts towards a voucher's threshold: the goods payable, or the subtotal of its categories."""
    cats = voucher.get("categories")
    if not cats:
        return goods_payable
    return sum(int(i["price_fen"]) * int(i.get("quantity", 1)) for i in cart["items"] if i.get("category") in cats)


def plan_for(cfg, mall, member_ref, cart, quote, at, voucher_ids=None, red_packet_fen=None, points=0):
    """The vouchers, red packets and points a cart can use, and the combination chosen.

    Vouchers: usable when live, unused, and their threshold (over their categories) is met; at most
    ``mall.checkout.vouchers_per_order`` on one order (largest first, earliest expiry breaking ties)
    unless the caller names them. Red packets: spent like cash, up to what is left (only beside a
    voucher when ``red_packets_with_voucher``). Points: only when asked, at ``fen_per_point``, at most
    ``max_share_bp`` of what is left.
    """
    co = mall.checkout
    per_order = int(co.get("vouchers_per_order", 1))
    with_voucher = bool(co.get("red_packets_with_voucher", True))
    pts_rule = co.get("points") or {}
    fen_per_point = int(pts_rule.get("fen_per_point", 1))
    max_share_bp = int(pts_rule.get("max_share_bp", 10000))
    total = int(quote["payable_fen"])
    goods_payable = int(quote["subtotal_fen"]) - int(quote["discount_fen"])
    items = held(member_ref, at)
    vouchers, packets = [], []
    for v in items:
        if v["kind"] == "red_packet":
            packets.append(v)
            continue
        base = _base_for(v, cart, goods_payable)
        v["usable"] = v["remaining_fen"] == v["amount_fen"] and base >= v["min_order_fen"]
        v["why_not"] = None if v["usable"] else (
            "partly used" if v["remaining_fen"] != v["amount_fen"]
            else f"threshold {v['min_order_fen']} fen not met ({base} fen"
                 + (f" in {v['categories']})" if v["categories"] else ")"))
        vouchers.append(v)
    if voucher_ids is None:
        ranked = sorted((v for v in vouchers if v["usable"]), key=lambda v: (-v["amount_fen"], v["expires_at"] or ""))
        chosen, left = [], goods_payable
        for v in ranked:
            if len(chosen) < per_order and v["amount_fen"] <= left:
                chosen.append(v)
                left -= v["amount_fen"]
    else:
        by_id = {v["voucher_id"]: v for v in vouchers}
        chosen = []
        for vid in voucher_ids:
            v = by_id.get(vid)
            if v is None or not v["usable"]:
                raise Problem(422, "voucher-not-usable", "Voucher not usable",
                              f"voucher {vid} is not held or does not apply to this order"
                              + (f": {v['why_not']}" if v else ""), voucher_id=vid)
            chosen.append(v)
        if len(chosen) > per_order:
            raise Problem(422, "voucher-stacking", "Too many vouchers",
                          f"at most {per_order} voucher(s) per order (mall.checkout.vouchers_per_order)",
                          rule="mall.checkout.vouchers_per_order")
    voucher_fen = min(sum(v["amount_fen"] for v in chosen), goods_payable)
    left = total - voucher_fen
    packet_balance = sum(p["remaining_fen"] for p in packets)
    packets_allowed = with_voucher or not chosen
    packet_max = min(packet_balance, left) if packets_allowed else 0
    if red_packet_fen is None:
        red = packet_max
    else:
        if red_packet_fen > packet_max:
            raise Problem(422, "red-packets-exceed", "Red packets exceed what may be used",
                          f"{red_packet_fen} fen of red packets asked, at most {packet_max} usable here",
                          allowed=packet_max, rule="mall.checkout.red_packets_with_voucher")
        red = red_packet_fen
    left -= red
    points_max = min(ml.points_balance(cfg, member_ref) if cfg.points else 0,
                     left * max_share_bp // 10000 // fen_per_point)
    if points > points_max:
        raise Problem(422, "points-exceed", "Too many points for this order",
                      f"{points} points asked, at most {points_max} usable (balance, and at most "
                      f"{max_share_bp} bp of the rest at {fen_per_point} fen per point)",
                      allowed=points_max, rule="mall.checkout.points")
    points_fen = points * fen_per_point
    left -= points_fen
    return {"vouchers_held": vouchers, "red_packets_held": packets, "red_packet_balance_fen": packet_balance,
            "points_usable": points_max, "fen_per_point": fen_per_point,
            "combination": {"vouchers": [{"voucher_id": v["voucher_id"], "name": v["name"],
                                          "amount_fen": v["amount_fen"], "lot_id": v["lot_id"]} for v in chosen],
                            "voucher_fen": voucher_fen, "red_packet_fen": red, "points": points,
                            "points_fen": points_fen, "cash_fen": left, "payable_fen": total,
                            "rules": ["mall.checkout.vouchers_per_order", "mall.checkout.red_packets_with_voucher",
                                      "mall.checkout.points"],
                            "policy_version": mall.version}}


def for_checkout(member_ref, cart, quote):
    """What checkout-benefits adds: vouchers and red packets held, and the best combination for this cart."""
    cfg, mall = mp.current(), mmall.current()
    out = plan_for(cfg, mall, member_ref, cart, quote, clock.now())
    return {"vouchers": out["vouchers_held"], "red_packets": {"balance_fen": out["red_packet_balance_fen"],
                                                              "lots": out["red_packets_held"]},
            "points_usable": out["points_usable"], "best_combination": out["combination"]}


def _order_dict(o):
    return {"order_ref": o.order_ref, "member_id": o.member_ref, "total_fen": o.total_fen,
            "refunded_fen": o.refunded_fen, "parts": json.loads(o.parts), "policy_version": o.policy_version,
            "at": timefmt.iso(o.at)}


def pay(member_ref, body, actor):
    """Pay an order: member benefits, then points, vouchers, red packets and cash, all in one transaction.

    Every lot spend is a recorded ledger spend (refundable to the same lots); the cash part is a ledger
    consume (cashback, available, overdraft). Nothing is spent unless everything is.

    Raises:
        Problem: order-already-paid (409), voucher-not-usable / voucher-stacking / red-packets-exceed /
            points-exceed (422), insufficient-funds (409, from the ledger).
    """
    from app.services.membership import plans
    from app.services.membership.growth import lock_member
    cfg, mall = mp.current(), mmall.current()
    at = clock.now()
    order_ref = body["order_ref"]
    cart = {k: body[k] for k in ("items", "shipping_fen", "channel") if k in body}

    @transactional()
    def run():
        member = lock_member(cfg, member_ref, at)
        if MemberOrder.get_or_none((MemberOrder.member_ref == member_ref) & (MemberOrder.order_ref == order_ref)):
            raise Problem(409, "order-already-paid", "Order already paid",
                          f"order {order_ref!r} of member {member_ref!r} is already paid", order_ref=order_ref)
        plan = plans.active_plan(cfg, member_ref, at)
        facts = {"member_id": member_ref, "known": True, "level": member.level, "growth": member.growth}
        quote = benefits.checkout(cfg, facts, plan, cart)
        chosen = plan_for(cfg, mall, member_ref, cart, quote, at, body.get("voucher_ids"),
                          body.get("red_packet_fen"), int(body.get("points", 0)))["combination"]
        parts = []
        memo = f"order {order_ref}"
        if chosen["points"]:
            j, used = ml.spend_lots(member_ref, cfg.points_asset, chosen["points"], f"order:{order_ref}:points",
                                    actor, memo)
            parts.append({"instrument": "points", "units": chosen["points"], "value_fen": chosen["points_fen"],
                          "journal": int(j), "refunded_units": 0})
            PointsAward.create(member_ref=member_ref, entry_key=f"order:{order_ref}:points", kind="redeem",
                               points=-chosen["points"], order_ref=order_ref, rule="mall.checkout.points",
                               policy_version=cfg.version, reason=f"paid part of order {order_ref}",
                               journal=j, at=at)
        for v in chosen["vouchers"]:
            j, _ = ml.spend_lots(member_ref, "VOUCHER", v["amount_fen"], f"order:{order_ref}:voucher:{v['voucher_id']}",
                                 actor, memo, lot_ids=[v["lot_id"]])
            parts.append({"instrument": "voucher", "units": v["amount_fen"], "value_fen": v["amount_fen"],
                          "journal": int(j), "voucher_id": v["voucher_id"], "refunded_units": 0})
        if chosen["red_packet_fen"]:
            j, _ = ml.spend_lots(member_ref, "RED_PACKET", chosen["red_packet_fen"], f"order:{order_ref}:red_packet",
                                 actor, memo)
            parts.append({"instrument": "red_packet", "units": chosen["red_packet_fen"],
                          "value_fen": chosen["red_packet_fen"], "journal": int(j), "refunded_units": 0})
        if chosen["cash_fen"]:
            consume = ml.pay_cash(member_ref, chosen["cash_fen"], f"order:{order_ref}:cash", actor, memo)
            parts.append({"instrument": "cash", "units": chosen["cash_fen"], "value_fen": chosen["cash_fen"],
                          "journal": int(consume["journal_id"]), "route": {k: consume[k] for k in
                                                                          ("cashback", "available", "overdraft")},
                          "refunded_units": 0})
        o = MemberOrder.create(member_ref=member_ref, order_ref=order_ref, total_fen=chosen["payable_fen"],
                               parts=json.dumps(parts), quote=json.dumps(quote, ensure_ascii=False),
                               policy_version=cfg.version, at=at)
        mp.record_decision("mall", cfg.version, "mall.checkout", f"member:{member_ref}",
                           {"order_ref": order_ref, "payable_fen": chosen["payable_fen"],
                            "asked": {"voucher_ids": body.get("voucher_ids"),
                                      "red_packet_fen": body.get("red_packet_fen"), "points": body.get("points", 0)}},
                           {"combination": chosen})
        return dict(_order_dict(o), discounts=quote["discounts"], fee_waivers=quote["fee_waivers"],
                    combination=chosen)
    return run()


def _target(part, refunded_cum, total):
    """Units of a part that should have gone back once ``refunded_cum`` of ``total`` is refunded.

    Pro rata, rounded down until the last refund squares everything; a voucher is indivisible and
    comes back whole only when the order is fully refunded.
    """
    if refunded_cum >= total:
        return part["units"]
    if part["instrument"] == "voucher":
        return 0
    return part["units"] * refunded_cum // total


def refund(member_ref, order_ref, refund_id, amount_fen, actor):
    """Refund (part of) a paid order along its original route, in the reverse order of use.

    Cash goes back through the ledger's refund of the consume (overdraft, available, cashback), red
    packets, vouchers and points to the lots that paid, with their original expiry, or
    ``mall.refunds.expired_extension_days`` from now when that lot has already expired. Idempotent by
    ``refund_id``; the order row is locked, so concurrent refunds cannot exceed what was paid.

    Returns:
        (created, refund dict).
    """
    from app.services.membership.growth import lock_member
    cfg, mall = mp.current(), mmall.current()
    at = clock.now()
    ext = int(mall.refunds.get("expired_extension_days") or 0)

    def replay(r):
        if r.member_ref != member_ref or r.order_ref != order_ref or r.amount_fen != amount_fen:
            raise Problem(409, "refund-id-reused", "Refund id reused",
                          f"refund {refund_id!r} exists with another order or amount")
        return False, json.loads(r.result)

    @transactional()
    def run():
        existing = OrderRefund.get_or_none(OrderRefund.refund_id == refund_id)
        if existing:
            return replay(existing)
        lock_member(cfg, member_ref, at)
        existing = OrderRefund.get_or_none(OrderRefund.refund_id == refund_id)
        if existing:
            return replay(existing)
        o = for_update(MemberOrder.select().where((MemberOrder.member_ref == member_ref)
                                                  & (MemberOrder.order_ref == order_ref))).get_or_none()
        if o is None:
            raise Problem(404, "order-not-found", "Order not found",
                          f"order {order_ref!r} of member {member_ref!r} was not paid through checkout")
        left = o.total_fen - o.refunded_fen
        if amount_fen > left:
            raise Problem(422, "refund-exceeds-remaining", "Refund exceeds remaining",
                          f"refund {amount_fen} > refundable {left}", requested=amount_fen, remaining=left)
        parts = json.loads(o.parts)
        cum = o.refunded_fen + amount_fen
        until = at + dt.timedelta(days=ext) if ext else None
        back = []
        for i in sorted(range(len(parts)), key=lambda i: -ORDER_OF_USE.index(parts[i]["instrument"])):
            part = parts[i]
            give = _target(part, cum, o.total_fen) - part["refunded_units"]
            if give <= 0:
                continue
            key = f"order-refund:{refund_id}:{i}"
            memo = f"refund {refund_id} of order {order_ref}"
            if part["instrument"] == "cash":
                res = ml.refund_cash(part["journal"], give, key, actor, memo)
                back.append({"instrument": "cash", "units": give, "value_fen": give, "journal": res["journal"],
                             "route": {k: res[k] for k in ("overdraft", "available", "cashback")}})
            else:
                res = ml.refund_lot_spend(member_ref, part["journal"], give, key, actor, memo, expired_until=until)
                item = {"instrument": part["instrument"], "units": give,
                        "value_fen": give * part["value_fen"] // part["units"], "journal": res["journal"],
                        "lots": [dict(lot, expires_at=_norm(lot["expires_at"]),
                                      original_expires_at=_norm(lot["original_expires_at"])) for lot in res["lots"]]}
                if part.get("voucher_id"):
                    item["voucher_id"] = part["voucher_id"]
                back.append(item)
                if part["instrument"] == "points":
                    PointsAward.create(member_ref=member_ref, entry_key=key, kind="refund", points=give,
                                       order_ref=order_ref, rule="mall.refunds.original_route",
                                       policy_version=cfg.version, reason=memo, journal=res["journal"], at=at)
            part["refunded_units"] += give
        MemberOrder.update(refunded_fen=cum, parts=json.dumps(parts)).where(MemberOrder.id == o.id).execute()
        result = {"refund_id": refund_id, "order_ref": order_ref, "member_id": member_ref, "amount_fen": amount_fen,
                  "refunded_fen": cum, "refundable_after_fen": o.total_fen - cum, "back": back,
                  "returned_fen": sum(b["value_fen"] for b in back),
                  "rule": "mall.refunds: reverse order of use, pro rata (vouchers whole on the full refund)",
                  "expired_extension_days": ext, "policy_version": cfg.version, "at": timefmt.iso(at)}
        OrderRefund.create(refund_id=refund_id, member_ref=member_ref, order_ref=order_ref, amount_fen=amount_fen,
                           result=json.dumps(result, ensure_ascii=False), policy_version=cfg.version, at=at)
        mp.record_decision("mall", cfg.version, "mall.refunds", f"member:{member_ref}",
                           {"order_ref": order_ref, "refund_id": refund_id, "amount_fen": amount_fen,
                            "refunded_before_fen": o.refunded_fen, "total_fen": o.total_fen},
                           {"back": [{k: b[k] for k in ("instrument", "units", "value_fen")} for b in back]})
        return True, result
    return run()


def order(member_ref, order_ref):
    o = MemberOrder.get_or_none((MemberOrder.member_ref == member_ref) & (MemberOrder.order_ref == order_ref))
    if o is None:
        raise Problem(404, "order-not-found", "Order not found", f"order {order_ref!r} of member {member_ref!r}")
    out = _order_dict(o)
    out["refunds"] = [json.loads(r.result) for r in OrderRefund.select().where(
        (OrderRefund.member_ref == member_ref) & (OrderRefund.order_ref == order_ref)).order_by(OrderRefund.id)]
    return out
