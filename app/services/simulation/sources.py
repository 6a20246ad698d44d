"""Simulation inputs: history records from the live database, JSONL or CSV files, and synthetic histories (``generate``)."""
import csv
import datetime as dt
import json
import math
import random

from app.errors import Problem
from app.platform.timefmt import iso

CSV_INT = ("amount_fen", "points")
CSV_BOOL = ("auto_renew",)


def read(source):
    """Records from ``source``: ``db`` (the live database, read only), a ``.jsonl`` or a ``.csv`` file.

    Yields:
        dicts in the replay format (see docs/simulation.md, "Input records").
    """
    for rec, _ in read_with_text(source):
        yield rec


def _compact(rec):
    return json.dumps(rec, ensure_ascii=False, separators=(",", ":"))


def read_with_text(source):
    """(record, its JSON text on one line) from ``source``: a JSONL line as it is, other sources as compact JSON."""
    if source == "db":
        for rec in from_database():
            yield rec, _compact(rec)
    elif source.endswith(".jsonl") or source.endswith(".ndjson"):
        with open(source, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                text = line.strip()
                if not text:
                    continue
                try:
                    rec = json.loads(text)
                except ValueError as exc:
                    raise Problem(422, "bad-events-file", "Bad events file", f"{source}:{n}: {exc}") from None
                if not isinstance(rec, dict):
                    raise Problem(422, "bad-events-file", "Bad events file", f"{source}:{n}: not a JSON object")
                yield rec, text
    elif source.endswith(".csv"):
        with open(source, encoding="utf-8", newline="") as fh:
            for n, row in enumerate(csv.DictReader(fh), 2):
                rec = {}
                for k, v in row.items():
                    if k is None or v in (None, ""):
                        continue
                    if k in CSV_INT:
                        try:
                            v = int(v)
                        except ValueError:
                            raise Problem(422, "bad-events-file", "Bad events file",
                                          f"{source}:{n}: {k} must be an integer") from None
                    elif k in CSV_BOOL:
                        v = v.lower() in ("1", "true", "yes")
                    rec[k] = v
                yield rec, _compact(rec)
    else:
        raise Problem(422, "bad-events-source", "Bad events source",
                      f"events must be 'db', a .jsonl or a .csv file, not {source!r}")


def from_database():
    """The live history, read only: member events, redemptions, subscriptions and ticket creations."""
    from app.models.membership import MemberEvent, PlanPeriod, Redemption, Subscription
    from app.models.tickets import Ticket
    for row in MemberEvent.select().order_by(MemberEvent.occurred_at, MemberEvent.id).iterator():
        rec = json.loads(row.body)
        rec["occurred_at"] = iso(row.occurred_at)
        yield rec
    for r in Redemption.select().where(Redemption.status != "rejected").order_by(Redemption.id).iterator():
        yield {"type": "points_redeemed", "member_id": r.member_ref, "redemption_id": r.redemption_id,
               "points": r.points, "purpose": r.purpose, "occurred_at": iso(r.at)}
    subs = {s.id: s for s in Subscription.select()}
    for p in PlanPeriod.select().where(PlanPeriod.kind == "subscribe").order_by(PlanPeriod.id).iterator():
        sub = subs.get(p.subscription_id)
        yield {"type": "plan_subscribed", "member_id": p.member_ref, "plan": p.plan,
               "payment_ref": p.payment_ref or f"db-period-{p.id}",
               "auto_renew": bool(sub.auto_renew) if sub else True, "occurred_at": iso(p.start)}
    for t in Ticket.select().order_by(Ticket.id).iterator():
        ticket = {"category": t.category, "title": t.title, "user_id": t.user_id, "channel": t.channel,
                  "source": t.source if t.source in ("system", "agent", "bot") else "system"}
        if t.body:
            ticket["body"] = t.body
        if t.amount_fen:
            ticket["amount_fen"] = int(t.amount_fen)
        if t.order_status:
            ticket["order_status"] = t.order_status
        rec = {"type": "ticket_created", "ticket_id": str(t.id), "ticket": ticket, "occurred_at": iso(t.created_at)}
        if t.first_response_at:
            rec["first_response_at"] = iso(t.first_response_at)
        if t.resolved_at:
            rec["resolved_at"] = iso(t.resolved_at)
        yield rec


# ---- synthetic histories ----------------------------------------------------------------------

# Documented in docs/simulation.md ("Synthetic histories"); changing one changes every generated file.
DISTRIBUTIONS = {
    "orders_per_member_year": "exponential around each member's rate; rates lognormal(mu=ln 3, sigma=0.9)",
    "order_value_fen": "lognormal(mu=ln 15000, sigma=0.8), rounded to 100 fen, 1,000..2,000,000",
    "refund_share": "6% of orders refunded (80% in full, else 20..80%) 1..20 days later",
    "sign_in": "each member signs in on a day with probability p ~ beta(0.5, 60) (about 3 a year)",
    "share_review": "3% of orders are followed by a review the same day; a share in 15% of 30-day months",
    "redemption": "a member with an order redeems 100..2,000 points (multiple of 100) with probability 10% a month",
    "plan": "5% of members subscribe to the first plan in the policy at a uniform day; 20% of them cancel later",
    "tickets": "one ticket per 40 orders, category 退换货/投诉/物流/配送 60/25/15%; "
               "first response 10..600 min, resolution 1..96 h (lognormal)",
}
CATEGORIES = (("退换货", 60), ("投诉", 25), ("物流/配送", 15))


def generate(members, days, seed, start="2025-01-01", plan_code="yule_monthly", categories=None, out=None):
    """A synthetic history (deterministic for a seed), time-ordered, written as JSONL to ``out`` or yielded.

    Args:
        members: number of members.
        days: length of the history in days.
        seed: random seed (same seed, same file).
        start: first day (YYYY-MM-DD, Asia/Shanghai midnight).
        plan_code: the paid plan subscribers take.
        categories: ticket categories to draw from (default: the demo's).

    Returns:
        number of records written when ``out`` is given, else the list of records.
    """
    rng = random.Random(seed)
    base = dt.datetime.fromisoformat(start).replace(tzinfo=dt.timezone(dt.timedelta(hours=8)))
    cats = categories or [c for c, _ in CATEGORIES]
    weights = [w for _, w in CATEGORIES][:len(cats)] or None
    recs = []

    def at(day, minute):
        t = base + dt.timedelta(days=day, minutes=minute)
        return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    for m in range(members):
        mid = f"m{m:07d}"
        rate = math.exp(rng.gauss(math.log(3), 0.9)) * days / 365.0
        p_sign = rng.betavariate(0.5, 60)
        n_orders = min(int(rng.expovariate(1 / rate)) if rate > 0 else 0, days * 3)
        member_recs = []
        order_days = sorted(rng.randrange(days) for _ in range(n_orders))
        for k, d in enumerate(order_days):
            minute = rng.randrange(8 * 60, 23 * 60)
            value = int(min(2_000_000, max(1000, round(math.exp(rng.gauss(math.log(15000), 0.8)) / 100) * 100)))
            ref = f"{mid}-o{k}"
            member_recs.append({"event_id": f"{ref}-paid", "member_id": mid, "type": "order_paid",
                                "amount_fen": value, "order_ref": ref, "channel": rng.choice(("app", "web", "app")),
                                "occurred_at": at(d, minute)})
            if rng.random() < 0.06:
                share = 100 if rng.random() < 0.8 else rng.randrange(20, 81)
                rd = d + rng.randrange(1, 21)
                if rd < days:
                    member_recs.append({"event_id": f"{ref}-refund", "member_id": mid, "type": "order_refunded",
                                        "amount_fen": value * share // 100, "order_ref": ref,
                                        "occurred_at": at(rd, rng.randrange(9 * 60, 22 * 60))})
            if rng.random() < 0.03:
                member_recs.append({"event_id": f"{ref}-review", "member_id": mid, "type": "review_posted",
                                    "occurred_at": at(d, min(minute + 30, 1439))})
            if rng.random() < 1 / 40:
                cat = rng.choices(cats, weights=weights)[0] if weights and len(weights) == len(cats) \
                    else rng.choice(cats)
                created = base + dt.timedelta(days=d, minutes=min(minute + 60, 1439))
                fr = created + dt.timedelta(minutes=rng.randrange(10, 601))
                rs = created + dt.timedelta(hours=math.exp(rng.gauss(math.log(12), 1.0)))
                member_recs.append({"type": "ticket_created", "ticket_id": f"{ref}-t", "member_id": mid,
                                    "ticket": {"category": cat, "title": f"order {ref} problem", "user_id": mid,
                                               "channel": "app", "order_no": ref, "amount_fen": value},
                                    "occurred_at": at(d, min(minute + 60, 1439)),
                                    "first_response_at": fr.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                                    "resolved_at": rs.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")})
        # sign-ins: a sparse Bernoulli walk (skip ahead geometrically instead of testing every day)
        d = -1
        while p_sign > 0:
            d += 1 + int(math.log(1 - rng.random()) / math.log(1 - min(p_sign, 0.999)))
            if d >= days:
                break
            member_recs.append({"event_id": f"{mid}-s{d}", "member_id": mid, "type": "sign_in", "channel": "app",
                                "occurred_at": at(d, rng.randrange(7 * 60, 23 * 60))})
        for month in range(days // 30):
            if rng.random() < 0.15:
                d = month * 30 + rng.randrange(30)
                member_recs.append({"event_id": f"{mid}-sh{month}", "member_id": mid, "type": "share",
                                    "channel": "app", "occurred_at": at(d, rng.randrange(9 * 60, 22 * 60))})
            if order_days and rng.random() < 0.10:
                d = month * 30 + rng.randrange(30)
                if d > order_days[0]:
                    member_recs.append({"type": "points_redeemed", "member_id": mid,
                                        "redemption_id": f"{mid}-r{month}", "points": rng.randrange(1, 21) * 100,
                                        "purpose": "coupon", "occurred_at": at(d, 23 * 60 + 30)})
        if plan_code and rng.random() < 0.05:
            d = rng.randrange(days)
            member_recs.append({"type": "plan_subscribed", "member_id": mid, "plan": plan_code,
                                "payment_ref": f"{mid}-pay", "auto_renew": True, "occurred_at": at(d, 12 * 60)})
            if rng.random() < 0.2 and d + 1 < days:
                member_recs.append({"type": "plan_cancelled", "member_id": mid,
                                    "occurred_at": at(rng.randrange(d + 1, days), 13 * 60)})
        recs.extend(member_recs)
    recs.sort(key=lambda r: r["occurred_at"])  # stable: ties keep member order
    if out is None:
        return recs
    with open(out, "w", encoding="utf-8") as fh:
        for r in recs:
            fh.write(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n")
    return len(recs)
