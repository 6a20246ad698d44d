"""One replay: one policy set over one partition of members, member state in memory, the membership context's decision functions run at the simulated clock, periodic work at its dates."""
import datetime as dt
import gc
import hashlib
import json
import logging
import os
import random
import shutil
import tempfile

from app.errors import Problem
from app.platform import clock, timefmt
from app.services.membership import benefits, events, growth, paid, plans, points
from app.services.membership import policy as mp

log = logging.getLogger(__name__)

ACTOR = "system:simulation"
PROGRESS_EVERY = 2000


def parse_at(text):
    """RFC 3339 text -> naive UTC (the parser live member events go through)."""
    return timefmt.parse(text, "/occurred_at", offset_required=True)


class Replay:
    """One policy set replayed over one partition of members, the member state in memory.

    ``open`` makes the set active in a throwaway database (policy lookups, ticket routing and SLA read the
    active set) and compiles it once; ``run`` replays the records through the membership context's own
    decision functions (``events.process``, ``points.redeem_in``, ``plans.subscribe_in`` ...) against a
    ``MemoryState``, with the periodic work (points expiry, deductions, renewals and lapses, monthly coupons)
    at its dates on the simulated clock, then returns the metrics.
    """

    def __init__(self, files, start, end, point_value_fen=1, workdir=None):
        self.files, self.start, self.end = files, start, end
        self.point_value_fen = int(point_value_fen)
        self.workdir = workdir
        self.app = None

    # ---- setup --------------------------------------------------------------------------------

    def open(self):
        """Make the policy set the active one in this (worker) process and compile it once.

        The set's files are written to a scratch folder that the app is configured with; the scratch
        SQLite database has no tables, so ``policy.startup`` activates the files (already checked by the
        runner) and nothing is stored anywhere.
        """
        from app import create_app, policy
        self.tmp = tempfile.mkdtemp(prefix="patron-sim-", dir=self.workdir)
        for rel, text in self.files.items():
            path = os.path.join(self.tmp, "set", rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(text)
        # The reference evaluator: in-process per-event evaluation is cheaper there than through durable_rules
        # (both engines give the same answers; see app/engine).
        self.app = create_app({"DATABASE_URL": "sqlite:///" + os.path.join(self.tmp, "empty.db"), "REDIS_URL": None,
                               "LOG_LEVEL": "WARNING", "TICKER": False, "RULES_ENGINE": "reference",
                               "POLICY_DIR": os.path.join(self.tmp, "set", "policies"),
                               "RULES_DIR": os.path.join(self.tmp, "set", "rules")})
        self.ctx = self.app.app_context()
        self.ctx.push()
        policy.startup(self.app)  # engine configured, the configured files active
        random.seed(0)  # anything random in the decision code: same run, same answers
        self.cfg = mp.current()
        if self.cfg.version != policy.PolicySet(self.files).version:
            raise RuntimeError(f"simulation: active set {self.cfg.version} is not the replayed set")
        return self

    def close(self):
        from app.db import db
        clock.set_now(None)
        try:
            if not db.is_closed():
                db.close()
        finally:
            if self.app is not None:
                self.ctx.pop()
            shutil.rmtree(self.tmp, ignore_errors=True)

    # ---- the run ------------------------------------------------------------------------------

    def run(self, records, total=None, progress=None):
        """Replay ``records`` (dicts with ``_at``: naive UTC, in time order) then tick to the end; returns metrics."""
        from app.services.simulation.memory import MemoryState
        cfg = self.cfg
        self.st = MemoryState(cfg, self.start, self.end)
        self.acc = Accumulator(cfg, self.start, self.end)
        self.ticks = Ticks(cfg, self.start, self.end)
        self.coupon_month, self.coupons_done = None, set()
        self._coupon_items = {}
        done = 0
        ticks = self.ticks
        for rec in records:
            at = rec["_at"]
            if at >= self.end:
                break
            if ticks.horizon is None or ticks.horizon < at:  # else nothing is due before ``at``
                self._tick_until(at)
            clock.set_now(at)
            self._one(rec, at)
            done += 1
            if progress and done % PROGRESS_EVERY == 0:
                progress(done, total)
        self._tick_until(self.end, inclusive=True)
        clock.set_now(self.end)
        if progress:
            progress(done, total)
        out = self.collect()
        clock.set_now(None)
        out["events_replayed"] = done
        return out

    def _tick_until(self, at, inclusive=False):
        for kind, t in self.ticks.due(at, inclusive):
            clock.set_now(t)
            if kind == "start":
                self.acc.levels_at_start = {ref: m.level for ref, m in self.st.members.items()}
            elif kind == "month":
                self.acc.monthly.append({"month": self.ticks.month_label(t), "levels": self._distribution()})
            else:
                self._daily(t)

    def _daily(self, t):
        """The periodic jobs of one business day, in the order the cron table runs them."""
        cfg, st = self.cfg, self.st
        st.forget_days_before(mp.window_key(cfg, t, "day"))
        expired = st.expire_lots(t)
        if self.start <= t <= self.end:
            st.points_expired += expired
        if cfg.deduction.get("method") and self.ticks.deduction_day(t):
            growth.deduct_all(t, cfg=cfg, st=st)
        plans.run_due(t, cfg=cfg, st=st)
        if cfg.by_level or cfg.by_plan:
            self._coupons(t)

    def _coupons(self, t):
        """The monthly coupon job: each member's coupon benefits in force, once per benefit and month."""
        cfg, st = self.cfg, self.st
        month = mp.window_key(cfg, t, "month")
        if month != self.coupon_month:  # a new month: every member may be due
            self.coupon_month, self.coupons_done = month, set()
            refs = list(st.members)
        else:  # later days: only members whose level or plan changed since
            refs = [r for r in st.level_touched if r in st.members]
        st.level_touched = set()
        counted = self.ticks.month_label(self.start) <= month <= self.ticks.month_label(self.end)
        for ref in refs:
            level = st.members[ref].level
            code = st.plan_at(ref, t)
            key = (level, code)
            items = self._coupon_items.get(key)
            if items is None:  # the same answer for every member at this level with this plan
                items = self._coupon_items[key] = benefits.monthly_coupons(cfg, level,
                                                                           plans.active_plan(cfg, ref, t, st))
            for item in items:
                done = (ref, item["name"])
                if done in self.coupons_done:
                    continue
                self.coupons_done.add(done)
                if counted:
                    self.acc.coupon(item)

    def _one(self, rec, at):
        typ = rec.get("type")
        in_window = at >= self.start
        digest = rec.pop("_digest", None)
        seq = rec.pop("_seq", None)
        body = rec
        del rec["_at"]
        cfg, st = self.cfg, self.st
        try:
            if typ == "points_redeemed":
                points.redeem_in(cfg, body["member_id"], body["redemption_id"], int(body["points"]),
                                 body.get("purpose"), ACTOR, at, st)
            elif typ == "plan_subscribed":
                plan = cfg.plans.get(body["plan"])
                if plan is None:
                    raise Problem(422, "unknown-plan", "Unknown plan", f"plan {body['plan']!r} is not offered")
                plans.subscribe_in(cfg, body["member_id"], plan, "external",
                                   body.get("payment_ref") or f"sim-{body['member_id']}-{seq}",
                                   bool(body.get("auto_renew", True)), ACTOR, at, st)
            elif typ == "plan_cancelled":
                plans.cancel_in(body["member_id"], at, st)
            elif typ == "ticket_created":
                self._ticket(body, at, in_window)
            else:
                discount = self._discount(body, at) if in_window and typ == "order_paid" else None
                result = events.process(cfg, body, ACTOR, st, digest)
                if in_window and not result.get("replayed"):
                    self.acc.event(result, discount)
        except Problem as exc:
            if in_window:
                self.acc.refused(typ, exc.code)

    def _discount(self, body, at):
        """The discount the member's benefits give this order at checkout (the checkout's own rules)."""
        cfg, st = self.cfg, self.st
        ref = body["member_id"]
        m = st.members.get(ref)
        level = m.level if m is not None else cfg.levels[0]["name"]
        plan = paid.with_ladder(cfg, ref, plans.active_plan(cfg, ref, at, st), at, st)
        cart = {"items": [{"sku": "order", "price_fen": int(body.get("amount_fen") or 0)}], "shipping_fen": 0,
                "channel": body.get("channel") or "app"}
        return benefits.cart_discounts(cfg, benefits.once(cfg, benefits.benefits_in_force, level, plan), cart)

    def _ticket(self, body, at, in_window):
        from app.services import tickets
        from app.services.tickets import policy as tickets_policy
        cfg, st = self.cfg, self.st
        create = dict(body["ticket"])
        ref = create["user_id"]
        member = None
        if ref in st.members:  # what membership tells ticket routing about a known member
            plan = plans.active_plan(cfg, ref, at, st)
            member = {"level": st.members[ref].level, "paid": plan is not None,
                      "plan": plan.get("code") if plan else None}
        tcfg = tickets_policy.current()
        facts = tickets.facts_of(create, known=True, member=member)
        t = tickets.new_ticket(tcfg, create, facts, tickets.route(tcfg, create, facts), at, ACTOR)
        if in_window:
            self.acc.ticket(t, body)

    # ---- the figures --------------------------------------------------------------------------

    def _distribution(self):
        got = {name: 0 for name in self.cfg.level_names}
        for m in self.st.members.values():
            got[m.level] = got.get(m.level, 0) + 1
        return got

    def collect(self):
        """Every figure of the report from the state and the accumulated event results."""
        cfg, acc, st = self.cfg, self.acc, self.st
        end_levels = {ref: m.level for ref, m in st.members.items()}
        start_levels = acc.levels_at_start if acc.levels_at_start is not None else {}
        matrix = {}
        for ref, to in end_levels.items():
            frm = start_levels.get(ref, "(new)")
            row = matrix.setdefault(frm, {})
            row[to] = row.get(to, 0) + 1
        growth = {"earned": 0, "clawed_back": 0, "deducted": 0, "cut_by_caps": 0}
        for kind, (delta, cut) in st.growth_totals.items():
            key = {"earn": "earned", "clawback": "clawed_back", "deduct": "deducted"}[kind]
            growth[key] = abs(delta)
            if kind == "earn":
                growth["cut_by_caps"] = cut
        pts = {"expired": st.points_expired, "redemptions_held": st.held_redemptions}
        for kind, (amount, cut) in st.points_totals.items():
            key = {"earn": "issued", "clawback": "clawed_back", "redeem": "redeemed"}[kind]
            pts[key] = abs(amount)
            if kind == "earn":
                pts["cut_by_caps"] = cut
        held = st.outstanding(self.end)
        outstanding = sum(held.values())
        plans = {"subscribed": 0, "renewed": 0, "revenue_fen": 0, "lapsed": 0, "expired": 0}
        active_paid = 0
        for ref, periods in st.periods.items():
            for start, end, _, price, kind in periods:
                if self.start <= start <= self.end:
                    plans["subscribed" if kind == "subscribe" else "renewed"] += 1
                    plans["revenue_fen"] += price
            if any(start <= self.end < end for start, end, _, _, _ in periods):
                active_paid += 1
        for sub in st.subs.values():
            if sub.ended_at is not None and self.start <= sub.ended_at <= self.end and sub.status in plans:
                plans[sub.status] += 1
        plans["active_at_end"] = active_paid
        distribution_end = {name: 0 for name in cfg.level_names}
        for lv in end_levels.values():
            distribution_end[lv] = distribution_end.get(lv, 0) + 1
        distribution_start = {name: 0 for name in cfg.level_names}
        for lv in start_levels.values():
            distribution_start[lv] = distribution_start.get(lv, 0) + 1
        benefit = {"discounts_fen": acc.discount_fen, "discounted_orders": acc.discounted_orders,
                   "cashback_fen": acc.cashback_fen, "coupons_fen": acc.coupons_fen,
                   "coupon_grants": acc.coupon_grants}
        benefit["total_fen"] = benefit["discounts_fen"] + benefit["cashback_fen"] + benefit["coupons_fen"]
        members = {ref: {"level": m.level, "growth": int(m.growth), "points": held.get(ref, 0)}
                   for ref, m in st.members.items()}
        return {
            "policy_version": cfg.version,
            "members": len(end_levels),
            "levels": {"order": list(cfg.level_names), "start": distribution_start, "end": distribution_end,
                       "monthly": acc.monthly, "transitions": matrix,
                       "promotions": st.promotions, "demotions": st.demotions},
            "growth": growth,
            "points": {**{k: 0 for k in ("issued", "clawed_back", "redeemed", "expired", "cut_by_caps")}, **pts,
                       "outstanding": outstanding, "point_value_fen": self.point_value_fen,
                       "liability_fen": outstanding * self.point_value_fen},
            "caps": acc.caps_report(),
            "benefits": benefit,
            "plans": plans,
            "tickets": acc.tickets_report(),
            "refused": dict(sorted(acc.refusals.items())),
            "member_states": members,
        }


class Ticks:
    """The instants periodic work happens at: daily jobs at local midnight, month starts, the window start."""

    def __init__(self, cfg, start, end):
        self.cfg, self.mp = cfg, mp
        self.start, self.end = start, end
        self.next_day = None
        self.started = False
        self.horizon = None  # no tick is due before this instant (set by ``due``)
        self.next_month = self._month_after(start, include=False)

    def _local_midnight_after(self, at):
        loc = self.mp.local(self.cfg, at)
        day = loc.replace(hour=0, minute=0, second=0, microsecond=0)
        if day < loc:
            day = day + dt.timedelta(days=1)
        return self.mp.to_utc(dt.datetime(day.year, day.month, day.day, tzinfo=self.cfg.tz))

    def _month_after(self, at, include):
        loc = self.mp.local(self.cfg, at)
        first = dt.datetime(loc.year, loc.month, 1, tzinfo=self.cfg.tz)
        if first < loc or (first == loc and not include):
            first = self.mp.add_months(first, 1)
        return self.mp.to_utc(first)

    def month_label(self, t):
        loc = self.mp.local(self.cfg, t)
        return f"{loc.year}-{loc.month:02d}"

    def deduction_day(self, t):
        """Whether a deduction can fall due on this day (calendar: the policy date; anniversary: every day)."""
        d = self.cfg.deduction
        if d.get("schedule", "calendar") != "calendar":
            return True
        loc = self.mp.local(self.cfg, t)
        return f"{loc.month:02d}-{loc.day:02d}" == d.get("date", "01-01")

    def due(self, at, inclusive=False):
        """(kind, instant) of every tick before ``at`` (or at it, when inclusive), in time order."""
        out = []
        if self.next_day is None:
            self.next_day = self._local_midnight_after(at)

        def before(t):
            return t <= at if inclusive else t < at
        while True:
            cands = []
            if not self.started and before(self.start):
                cands.append((self.start, 1, "start"))
            if before(self.next_day):
                cands.append((self.next_day, 0, "day"))
            if self.next_month <= self.end and before(self.next_month):
                cands.append((self.next_month, 2, "month"))
            if not cands:
                pending = [self.next_day] + ([] if self.started else [self.start]) + (
                    [self.next_month] if self.next_month <= self.end else [])
                self.horizon = min(pending)
                return out
            t, _, kind = min(cands)
            if kind == "start":
                self.started = True
            elif kind == "day":
                self.next_day = self.mp.to_utc(self.mp.local(self.cfg, t) + dt.timedelta(days=1))
            else:
                self.next_month = self._month_after(t, include=False)
            out.append((kind, t))


class Accumulator:
    """Figures read from each event's own result as it is replayed (cap cuts, cashback, discounts, tickets)."""

    def __init__(self, cfg, start, end):
        self.cfg = cfg
        self.levels_at_start = None
        self.monthly = []
        self.caps = {}
        self.cashback_fen = 0
        self.discount_fen = 0
        self.discounted_orders = 0
        self.coupons_fen = self.coupon_grants = 0
        self.refusals = {}
        self.tickets = {}
        self.ticket_breaches = {}

    def _cut(self, prefix, member, cuts):
        for c in cuts or []:
            key = f"{prefix}:{c['cap']}"
            slot = self.caps.setdefault(key, {"hits": 0, "members": set(), "amount_cut": 0})
            slot["hits"] += 1
            slot["members"].add(member)
            slot["amount_cut"] += int(c.get("cut") or 0)

    def event(self, result, discounts):
        member = result["member_id"]
        for e in result["growth"]["entries"]:
            self._cut("growth", member, e.get("cuts"))
        for e in result["points"]["entries"]:
            self._cut("points", member, e.get("cuts"))
        for c in result.get("cashback") or []:
            self.cashback_fen += int(c.get("amount_fen") or 0)
        if discounts:
            applied = [d for d in discounts if d.get("applied")]
            if applied:
                self.discounted_orders += 1
                self.discount_fen += sum(int(d["amount_fen"]) for d in applied)

    def coupon(self, item):
        self.coupons_fen += int(item["amount_fen"]) * int(item.get("per_month", 1))
        self.coupon_grants += 1

    def refused(self, typ, code):
        key = f"{typ}:{code}"
        self.refusals[key] = self.refusals.get(key, 0) + 1

    def ticket(self, t, body):
        key = f"{t.department}|{t.priority}"
        self.tickets[key] = self.tickets.get(key, 0) + 1
        for metric, due, actual in (("first_response", t.response_due_at, body.get("first_response_at")),
                                    ("resolution", t.resolution_due_at, body.get("resolved_at"))):
            if actual is None or due is None:
                continue
            slot = self.ticket_breaches.setdefault(f"{t.priority}|{metric}", {"measured": 0, "breached": 0})
            slot["measured"] += 1
            if parse_at(actual) > due:
                slot["breached"] += 1

    def caps_report(self):
        return {k: {"hits": v["hits"], "members": len(v["members"]), "amount_cut": v["amount_cut"]}
                for k, v in sorted(self.caps.items())}

    def tickets_report(self):
        routing = {}
        for key, n in sorted(self.tickets.items()):
            dept, prio = key.split("|")
            routing.setdefault(dept, {})[prio] = n
        breaches = {}
        for key, v in sorted(self.ticket_breaches.items()):
            prio, metric = key.split("|")
            breaches.setdefault(prio, {})[metric] = v
        return {"created": sum(self.tickets.values()), "routing": routing, "sla": breaches}


def fingerprint(text):
    """A fingerprint of a record's text, what idempotency by event id compares when an event id comes again
    (the live path compares a digest of the body)."""
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


def read_partition(path):
    """The records of a partition file written by the planner (``<instant>\t<sequence>\t<record JSON>`` lines).

    ``_digest``: the record's ``fingerprint``.
    """
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            at, seq, text = line.split("\t", 2)
            rec = json.loads(text)
            rec["_at"] = dt.datetime.fromisoformat(at)
            rec["_seq"] = int(seq)
            rec["_digest"] = fingerprint(text)
            yield rec


def run_task(task, queue=None):
    """Worker process entry: replay one partition of one policy set; the metrics (or an error) go on ``queue``.

    The partition comes from the planner's file (``events_path``) or is read from the source by this worker
    (``source``: ``runner.Stream``); a refused record, or a source out of time order, is reported as such.
    """
    from app.services.simulation import runner
    logging.disable(logging.WARNING)
    # A replay keeps millions of long-lived objects (member state) and frees what it allocates per record by
    # reference counting: it makes no cyclic garbage (a 100,000-member year peaks at the same memory with the
    # collector off), so collector passes over the growing state only cost time (about 4% of a replay). The
    # set-up's objects leave the collector's view and it is off while the records are replayed.
    label = task["label"]

    def progress(done, total):
        if queue is not None:
            queue.put(("progress", label, task["partition"], done))
    rep = None
    try:
        rep = Replay(task["files"], dt.datetime.fromisoformat(task["from"]), dt.datetime.fromisoformat(task["to"]),
                     task.get("point_value_fen", 1), task.get("workdir")).open()
        gc.freeze()
        gc.disable()
        if "source" in task:
            stream = runner.Stream(task["source"], rep.end, task.get("members"), task["partitions"],
                                   task["partition"], task.get("digest", True))
            out = rep.run(stream, task.get("total"), progress)
            out["events_digest"] = stream.digest
        else:
            out = rep.run(read_partition(task["events_path"]), task.get("total"), progress)
        if queue is not None:
            queue.put(("done", label, task["partition"], out))
        return out
    except runner.Unordered as exc:
        if queue is not None:
            queue.put(("unordered", label, task["partition"], str(exc)))
        return None
    except Problem as exc:
        if queue is not None:
            queue.put(("problem", label, task["partition"], {"status": exc.status, "code": exc.code,
                                                             "title": exc.title, "detail": exc.detail, **exc.extra}))
        return None
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which fails the run
        log.exception("simulation worker failed")
        if queue is not None:
            queue.put(("error", label, task["partition"], f"{type(exc).__name__}: {exc}"))
        raise
    finally:
        gc.enable()
        if rep is not None:
            rep.close()
