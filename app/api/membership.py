"""Membership API: member events, member view/history/offers, checkout benefits, points redemption, paid plans, KPIs."""
import re

from flask import Blueprint, g, jsonify, request

from app.api import idempotency_key, operation, page, page_args, page_query, q
from app.errors import Problem, validation_failed
from app.platform import auth, idempotency
from app.platform.export import csv_response
from app.services import membership
from app.services.membership import center
from app.services.membership import events
from app.services.membership import kpi
from app.services.membership import mall
from app.services.membership import plans
from app.services.membership import points
from app.services.membership import vouchers
from app.platform import timefmt
from app.services.simulation import shadow

bp = Blueprint("members", __name__, url_prefix="/v1")
TAGS = ["members"]
_ID = re.compile(r"[A-Za-z0-9_.:@-]{1,100}")
MEMBER = {"member_id": {"type": "string", "pattern": "^[A-Za-z0-9_.:@-]{1,100}$"}}
NOT_FOUND = {404: "member-not-found"}


def _member_id(value):
    if not _ID.fullmatch(value):
        raise validation_failed([{"pointer": "/path/member_id", "validator": "pattern",
                                  "message": "1-100 characters of A-Z a-z 0-9 _ . : @ -"}])
    return value


def _actor():
    return auth.actor(g.principal)


@bp.post("/member-events")
@operation("Post one member event (idempotent by event_id)", scope="members:write",
           body="api/members/event.json", tags=TAGS, status=201, idempotent="body:event_id",
           problems={409: "event-id-reused (same event id, another body)", 404: "member-not-found",
                     422: "unknown-event-type, validation-failed"},
           response="api/members/event_result.json", also={200: "the event id was seen before with the same body: "
                                                              "its stored answer (replayed: true)"})
def post_event():
    created, result = events.ingest(g.body, _actor())
    if created:
        shadow.after_ingest([result["event_id"]])  # a job per batch when a candidate is shadowed; else nothing
    return jsonify(result), 201 if created else 200


@bp.post("/member-events/batch")
@operation("Post up to 500 member events in one transaction (per-item results)", scope="members:write",
           body="api/members/event_batch.json", tags=TAGS, idempotent="body:event_id", problems={422: "batch-too-large, validation-failed"},
           response="api/members/event_batch_result.json")
def post_events_batch():
    items = events.ingest_batch(g.body["events"], _actor())
    shadow.after_ingest([i["event_id"] for i in items if i["status"] == 201])
    return jsonify(items=items, accepted=sum(1 for i in items if i["status"] < 300),
                   rejected=sum(1 for i in items if i["status"] >= 300))


@bp.get("/members/<member_id>")
@operation("Member view: level, growth, progress, points lots, paid status, benefits, offers",
           scope="members:read", tags=TAGS, path=MEMBER, problems=NOT_FOUND, response="api/members/member.json")
def get_member(member_id):
    return jsonify(membership.view(_member_id(member_id)))


@bp.get("/members/<member_id>/history")
@operation("Growth, level and points changes with reasons (newest first)", scope="members:read", tags=TAGS,
           path=MEMBER, problems=NOT_FOUND,
           query=page_query("string", maximum=500), response="api/members/history_page.json")
def get_history(member_id):
    cursor, limit = page_args()
    return page(*membership.history(_member_id(member_id), limit, cursor))


@bp.get("/members/<member_id>/offers")
@operation("Paid plans the member could buy and what each adds", scope="members:read", tags=TAGS, path=MEMBER,
           problems=NOT_FOUND, response="api/members/offers.json")
def get_offers(member_id):
    view = membership.view(_member_id(member_id))
    return jsonify(member_id=member_id, policy_version=view["policy_version"], offers=view["offers"])


@bp.get("/members/<member_id>/service-benefits")
@operation("Service benefits (priority, queue) customer service applies", scope="members:read", tags=TAGS,
           path=MEMBER, problems=NOT_FOUND, response="api/members/service_benefits.json")
def get_service_benefits(member_id):
    return jsonify(membership.service_benefits(_member_id(member_id)))


@bp.post("/members/<member_id>/checkout-benefits")
@operation("Benefits for a cart: discounts, fee waivers, coupons, points to earn (read-only)",
           scope="members:read", body="api/members/checkout.json", tags=TAGS, path=MEMBER, problems=NOT_FOUND,
           readonly=True, response="api/members/checkout_benefits.json")
def checkout_benefits(member_id):
    return jsonify(membership.checkout_benefits(_member_id(member_id), g.body))


@bp.post("/members/<member_id>/points/redemptions")
@operation("Redeem points within the risk caps (large ones are held for review)", scope="members:write",
           body="api/members/redemption.json", tags=TAGS, status=201, path=MEMBER, idempotent="body:redemption_id",
           problems={404: "member-not-found", 409: "redemption-id-reused, insufficient-funds",
                     422: "redemption-limit-exceeded (names the cap, window and limit)"},
           response="api/members/points_redemption.json",
           also={200: "the redemption id was seen before with the same member and points: the redemption now"})
def redeem(member_id):
    body = g.body
    created, result = points.redeem(_member_id(member_id), body["redemption_id"], body["points"],
                                    body.get("purpose"), _actor())
    return jsonify(result), 201 if created else 200


@bp.post("/members/<member_id>/points/redemptions/<redemption_id>/approve")
@operation("Approve a held redemption (spends the points)", scope="members:write",
           body="api/members/decision.json", tags=TAGS, path=MEMBER, idempotent="replay",
           problems={404: "redemption-not-found", 409: "redemption-already-decided, insufficient-funds"},
           response="api/members/points_redemption.json")
def approve(member_id, redemption_id):
    return jsonify(points.decide(_member_id(member_id), redemption_id, True, _actor(), g.body.get("note")))


@bp.post("/members/<member_id>/points/redemptions/<redemption_id>/reject")
@operation("Reject a held redemption", scope="members:write", body="api/members/decision.json", tags=TAGS,
           path=MEMBER, problems={404: "redemption-not-found", 409: "redemption-already-decided"}, idempotent="replay",
           response="api/members/points_redemption.json")
def reject(member_id, redemption_id):
    return jsonify(points.decide(_member_id(member_id), redemption_id, False, _actor(), g.body.get("note")))


@bp.post("/members/<member_id>/subscriptions")
@operation("Subscribe to a paid plan (pays the first period)", scope="members:write",
           body="api/members/subscribe.json", tags=TAGS, idempotent=True, status=201, path=MEMBER,
           problems={404: "member-not-found", 409: "already-subscribed, insufficient-funds",
                     422: "unknown-plan, payment-ref-required"}, response="api/members/subscription.json")
def subscribe(member_id):
    member_id = _member_id(member_id)
    key = idempotency_key()
    body = g.body
    status, result, _ = idempotency.run(
        g.principal["id"], key, "members.subscribe", {"member_id": member_id, **body},
        lambda: plans.subscribe(member_id, body["plan"], body.get("payment", "balance"), body.get("payment_ref"),
                                body.get("auto_renew", True), _actor()), status_code=201)
    return jsonify(result), status


@bp.post("/members/<member_id>/subscriptions/cancel")
@operation("Cancel auto-renewal (benefits last until the paid period ends)", scope="members:write", tags=TAGS,
           path=MEMBER, problems={404: "no-subscription"}, idempotent="replay", response="api/members/subscription.json")
def cancel(member_id):
    return jsonify(plans.cancel(_member_id(member_id), _actor()))


@bp.get("/members/<member_id>/subscriptions")
@operation("Subscriptions of a member with their paid periods", scope="members:read", tags=TAGS, path=MEMBER,
           response="api/members/subscriptions.json")
def list_subscriptions(member_id):
    from app.models.membership import Subscription
    out = []
    for sub in Subscription.select().where(Subscription.member_ref == _member_id(member_id)) \
            .order_by(Subscription.id.desc()):
        d = plans.subscription_dict(sub)
        d["periods"] = [{"start": timefmt.iso(p.start), "end": timefmt.iso(p.end), "price_fen": p.price_fen,
                         "payment": p.payment, "journal": p.journal, "kind": p.kind}
                        for p in sub.periods.order_by(plans.PlanPeriod.start)]
        out.append(d)
    return jsonify(member_id=member_id, subscriptions=out)


@bp.get("/member-kpis")
@operation("Membership KPIs per month (retention, repurchase, paid conversion, paid GMV share, levels)",
           scope="members:read", tags=TAGS,
           query={"from": "first month YYYY-MM", "to": "last month YYYY-MM", "format": q("json (default) or csv", enum=["json", "csv"])},
           content={"text/csv": "format=csv: UTF-8 CSV with a BOM"}, response="api/members/kpis.json")
def kpis():
    report = kpi.compute(request.args.get("from"), request.args.get("to") or request.args.get("from"))
    fmt = request.args.get("format", "json")
    if fmt == "csv":
        return csv_response(kpi.to_csv(report), "member-kpis.csv")
    if fmt != "json":
        raise Problem(422, "validation-failed", "Validation failed", "format is json or csv",
                      errors=[{"pointer": "/query/format", "validator": "enum", "message": "json or csv"}])
    return jsonify(report)


# ---- the closed loop: points mall, checkout with vouchers / red packets / points, refunds, member center

@bp.get("/mall/items")
@operation("Points mall catalogue with stock left (and, for a member, eligibility)", scope="members:read",
           tags=TAGS, query={"member_id": "optional: say which items this member may redeem"},
           response="api/members/mall_catalogue.json")
def mall_items():
    ref = request.args.get("member_id")
    return jsonify(mall.catalogue(_member_id(ref) if ref else None))


@bp.post("/members/<member_id>/mall/redemptions")
@operation("Redeem points for a mall item (idempotent by redemption_id; caps and stock checked)",
           scope="members:write", body="api/members/mall_redemption.json", tags=TAGS, status=201,
           idempotent="body:redemption_id", path=MEMBER, response="api/members/mall_redemption_record.json",
           also={200: "the redemption id was seen before with the same item: the redemption now"})
def mall_redeem(member_id):
    created, result = mall.redeem(_member_id(member_id), g.body["redemption_id"], g.body["item"], _actor())
    return jsonify(result), 201 if created else 200


@bp.post("/members/<member_id>/mall/redemptions/<redemption_id>/cancel")
@operation("Cancel goods not yet fulfilled: points back to their lots, stock back", scope="members:write",
           body="api/members/decision.json", tags=TAGS, idempotent="replay", path=MEMBER,
           response="api/members/mall_redemption_record.json")
def mall_cancel(member_id, redemption_id):
    return jsonify(mall.cancel(_member_id(member_id), redemption_id, _actor(), g.body.get("note")))


@bp.post("/members/<member_id>/mall/redemptions/<redemption_id>/fulfil")
@operation("Mark mall goods shipped (no cancellation afterwards)", scope="members:write",
           body="api/members/decision.json", tags=TAGS, idempotent="replay", path=MEMBER,
           response="api/members/mall_redemption_record.json")
def mall_fulfil(member_id, redemption_id):
    return jsonify(mall.fulfil(_member_id(member_id), redemption_id, _actor(), g.body.get("note")))


@bp.get("/members/<member_id>/vouchers")
@operation("Vouchers and red packets the member holds (live, unused), earliest expiry first",
           scope="members:read", tags=TAGS, path=MEMBER, response="api/members/vouchers.json")
def member_vouchers(member_id):
    return jsonify(member_id=member_id, items=vouchers.held(_member_id(member_id)))


@bp.post("/members/<member_id>/orders")
@operation("Pay an order: member benefits, vouchers, red packets, points and cash in one transaction",
           scope="members:write", body="api/members/order.json", tags=TAGS, idempotent=True, status=201, path=MEMBER,
           response="api/members/paid_order.json")
def pay_order(member_id):
    member_id = _member_id(member_id)
    status, result, _ = idempotency.run(
        g.principal["id"], idempotency_key(), "members.pay_order", {"member_id": member_id, **g.body},
        lambda: vouchers.pay(member_id, g.body, _actor()), status_code=201)
    return jsonify(result), status


@bp.get("/members/<member_id>/orders/<order_ref>")
@operation("An order paid through checkout: what each instrument paid, refunds", scope="members:read", tags=TAGS, path=MEMBER,
           response="api/members/order_status.json")
def get_order(member_id, order_ref):
    return jsonify(vouchers.order(_member_id(member_id), order_ref))


@bp.post("/members/<member_id>/orders/<order_ref>/refunds")
@operation("Refund (part of) an order along its original route (idempotent by refund_id)",
           scope="members:write", body="api/members/order_refund.json", tags=TAGS, status=201,
           idempotent="body:refund_id", path=MEMBER, response="api/members/order_refund_result.json",
           also={200: "the refund id was seen before with the same order and amount: its stored answer"})
def refund_order(member_id, order_ref):
    created, result = vouchers.refund(_member_id(member_id), order_ref, g.body["refund_id"], g.body["amount_fen"],
                                      _actor())
    return jsonify(result), 201 if created else 200


@bp.put("/members/<member_id>/profile")
@operation("Set the member's nickname and phone (the phone is only ever returned masked)",
           scope="members:write", body="api/members/profile.json", tags=TAGS, path=MEMBER,
           response="api/members/masked_profile.json")
def put_profile(member_id):
    return jsonify(center.set_profile(_member_id(member_id), g.body))


@bp.get("/members/<member_id>/center")
@operation("Member center: masked profile, level and progress, benefits, points by expiry, vouchers, paid "
           "ladder and offers", scope="members:read", tags=TAGS, path=MEMBER, response="api/members/member_center.json")
def member_center(member_id):
    return jsonify(center.view(_member_id(member_id)))
