"""One replay: a throwaway SQLite database with one policy set active, the clock moved through the events, the live services and periodic jobs run at their dates."""
import datetime as dt
import json
import logging
import os
import random
import shutil
import tempfile

log = logging.getLogger(__name__)

ACTOR = "system:simulation"
PROGRESS_EVERY = 2000


def parse_at(text):
    """RFC 3339 text -> naive UTC (the parser live member events go through)."""
    from app.platform import timefmt
    return timefmt.parse(text, "/occurred_at", offset_required=True)


class Replay:
    """A throwaway database with ``files`` active; ``run(events)`` replays and returns the metrics.

    Used inside a worker process (``run_task``) and, for the equivalence tests, the metrics half of it
    (``collect``) also reads the live test database.
    """

    def __init__(self, files, start, end, point_value_fen=1, workdir=None):
        self.files, self.start, self.end = files, start, end
        self.point_value_fen = int(point_value_fen)
        self.workdir = workdir
        self.app = None

    # ---- setup --------------------------------------------------------------------------------

    def open(self):
        """Create, migrate and activate the throwaway database (SQLite, no journal, no fsync: it is discarded)."""
        from app import create_app, policy
        from app.db import db
        from app.migrations import upgrade
        self.tmp = tempfile.mkdtemp(prefix="patron-sim-", dir=self.workdir)
        url = "sqlite:///" + os.path.join(self.tmp, "replay.db")
        self.app = create_app({"DATABASE_URL": url, "REDIS_URL": None, "LOG_LEVEL": "WARNING", "TICKER": False})
        self.ctx = self.app.app_context()
        self.ctx.push()
        upgrade()
        db.connect(reuse_if_open=True)
        # The database is thrown away after the run: a crash loses nothing worth a journal or an fsync.
        db.execute_sql("PRAGMA journal_mode=OFF")
        db.execute_sql("PRAGMA synchronous=OFF")
        db.execute_sql("PRAGMA temp_store=MEMORY")
        db.execute_sql("PRAGMA cache_size=-200000")
        policy.startup(self.app)  # engine configured, active-set provider installed (the configured files)
        policy.apply(self.files, ACTOR, note="simulation replay")
        random.seed(0)  # the budget shard walk starts at a random shard: same run, same rows
        from app.services.membership import policy as mp
        self.cfg = mp.current()
        return self

    def close(self):
        from app.db import db
        from app.platform import clock
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
        from app.platform import clock
        cfg = self.cfg
        self.acc = Accumulator(cfg, self.start, self.end)
        self.ticks = Ticks(cfg, self.start, self.end)
        done = 0
        for rec in records:
            at = rec["_at"]
            if at >= self.end:
                break
            self._tick_until(at)
            clock.set_now(at)
            self._one(rec, at)
            done += 1
            if progress and done % PROGRESS_EVERY == 0:
                progress(done, total)
        self._tick_until(self.end, inclusive=True)
        clock.set_now(None)
        if progress:
            progress(done, total)
        out = self.collect()
        out["events_replayed"] = done
        return out

    def _tick_until(self, at, inclusive=False):
        from app.platform import clock
        for kind, t in self.ticks.due(at, inclusive):
            clock.set_now(t)
            if kind == "start":
                self.acc.levels_at_start = self._levels()
            elif kind == "month":
                self.acc.monthly.append({"month": self.ticks.month_label(t), "levels": self._distribution()})
            else:
                self._daily(t)

    def _daily(self, t):
        """The periodic jobs of one business day, in the order the cron table runs them."""
        from app.services.membership import benefits, growth, plans
        import jobs.ledger as jl
        cfg = self.cfg
        in_window = self.start <= t <= self.end
        expiring = self._expiring_points(t)
        while jl.expire_lots(at=t):
            pass
        if in_window:
            self.acc.points["expired"] += expiring
        if cfg.deduction.get("method") and self.ticks.deduction_day(t):
            growth.deduct_all(t)
        plans.run_due(t)
        if cfg.by_level or cfg.by_plan:
            benefits.issue_coupons(t, actor=ACTOR)

    def _one(self, rec, at):
        from app.errors import Problem
        from app.services import membership
        from app.services.membership import events, plans, points
        typ = rec.get("type")
        in_window = at >= self.start
        body = {k: v for k, v in rec.items() if not k.startswith("_")}
        try:
            if typ == "points_redeemed":
                _, r = points.redeem(body["member_id"], body["redemption_id"], int(body["points"]),
                                     body.get("purpose"), ACTOR)
                if in_window:
                    self.acc.redemption(r)
            elif typ == "plan_subscribed":
                plans.subscribe(body["member_id"], body["plan"], "external",
                                body.get("payment_ref") or f"sim-{body['member_id']}-{rec['_seq']}",
                                bool(body.get("auto_renew", True)), ACTOR)
            elif typ == "plan_cancelled":
                plans.cancel(body["member_id"], ACTOR)
            elif typ == "ticket_created":
                self._ticket(body, at, in_window)
            else:
                discount = None
                if in_window and typ == "order_paid":
                    # the benefits checkout would have applied to this order (same read-only code as the API)
                    cart = {"items": [{"sku": "order", "price_fen": int(body.get("amount_fen") or 0)}],
                            "shipping_fen": 0, "channel": body.get("channel") or "app"}
                    discount = membership.checkout_benefits(body["member_id"], cart)
                _, result = events.ingest(body, ACTOR)
                if in_window:
                    self.acc.event(result, discount)
        except Problem as exc:
            if in_window:
                self.acc.refused(typ, exc.code)

    def _ticket(self, body, at, in_window):
        from app.models.tickets import Ticket
        from app.services import tickets
        create = dict(body["ticket"])
        principal = {"kind": "service", "id": "simulation", "scopes": ["admin"]}
        _, ticket, _ = tickets.create(principal, create, None)
        if not in_window:
            return
        t = Ticket.get_by_id(ticket["id"])
        self.acc.ticket(t, body)

    # ---- reading the throwaway database --------------------------------------------------------

    def _levels(self):
        from app.db import db
        return dict(db.execute_sql("SELECT member_ref, level FROM member").fetchall())

    def _distribution(self):
        from app.db import db
        rows = db.execute_sql("SELECT level, COUNT(*) FROM member GROUP BY level").fetchall()
        got = {lv: int(n) for lv, n in rows}
        return {name: got.get(name, 0) for name in self.cfg.level_names}

    def _expiring_points(self, t):
        from app.db import db
        p = db.obj.param
        row = db.execute_sql(f"SELECT COALESCE(SUM(remaining_minor), 0) FROM ledger_lot WHERE asset = {p} "
                             f"AND state = 'open' AND expires_at <= {p}", (self.cfg.points_asset, t)).fetchone()
        return int(row[0] or 0)

    def collect(self):
        """Every figure of the report from the database and the accumulated event results."""
        from app.db import db
        cfg, acc = self.cfg, self.acc
        p = db.obj.param
        win = (self.start, self.end)
        end_levels = self._levels()
        start_levels = acc.levels_at_start if acc.levels_at_start is not None else {}
        matrix = {}
        for ref, to in end_levels.items():
            frm = start_levels.get(ref, "(new)")
            row = matrix.setdefault(frm, {})
            row[to] = row.get(to, 0) + 1
        promotions = demotions = 0
        for frm, to in db.execute_sql(f"SELECT from_level, to_level FROM level_change WHERE at >= {p} AND at <= {p}",
                                      win).fetchall():
            if cfg.level_index(to) > cfg.level_index(frm or cfg.level_names[0]):
                promotions += 1
            else:
                demotions += 1
        growth = {"earned": 0, "clawed_back": 0, "deducted": 0, "cut_by_caps": 0}
        for kind, delta, cut in db.execute_sql(
                f"SELECT kind, SUM(delta), SUM(cut) FROM growth_entry WHERE at >= {p} AND at <= {p} GROUP BY kind",
                win).fetchall():
            key = {"earn": "earned", "clawback": "clawed_back", "deduct": "deducted"}.get(kind, kind)
            growth[key] = abs(int(delta or 0))
            if kind == "earn":
                growth["cut_by_caps"] = int(cut or 0)
        pts = dict(acc.points)
        for kind, amount, cut in db.execute_sql(
                f"SELECT kind, SUM(points), SUM(cut) FROM points_award WHERE at >= {p} AND at <= {p} GROUP BY kind",
                win).fetchall():
            key = {"earn": "issued", "clawback": "clawed_back", "redeem": "redeemed"}.get(kind, kind)
            pts[key] = abs(int(amount or 0))
            if kind == "earn":
                pts["cut_by_caps"] = int(cut or 0)
        row = db.execute_sql(f"SELECT COALESCE(SUM(remaining_minor), 0) FROM ledger_lot WHERE asset = {p} AND "
                             f"state = 'open' AND (expires_at IS NULL OR expires_at > {p})",
                             (cfg.points_asset, self.end)).fetchone()
        outstanding = int(row[0] or 0)
        months = (self.ticks.month_label(self.start), self.ticks.month_label(self.end))
        coupons = db.execute_sql(f"SELECT COALESCE(SUM(amount_fen * count), 0), COUNT(*) FROM coupon_grant "
                                 f"WHERE month >= {p} AND month <= {p} AND journal IS NOT NULL",
                                 months).fetchone()
        plans = {"subscribed": 0, "renewed": 0, "revenue_fen": 0, "lapsed": 0, "expired": 0}
        for kind, n, fen in db.execute_sql(f"SELECT kind, COUNT(*), SUM(price_fen) FROM plan_period WHERE start >= {p} "
                                           f"AND start <= {p} GROUP BY kind", win).fetchall():
            plans["subscribed" if kind == "subscribe" else "renewed"] += int(n)
            plans["revenue_fen"] += int(fen or 0)
        for status, n in db.execute_sql(f"SELECT status, COUNT(*) FROM subscription WHERE ended_at >= {p} "
                                        f"AND ended_at <= {p} GROUP BY status", win).fetchall():
            if status in plans:
                plans[status] = int(n)
        active_paid = db.execute_sql(f"SELECT COUNT(DISTINCT member_ref) FROM plan_period WHERE start <= {p} "
                                     f"AND \"end\" > {p}", (self.end, self.end)).fetchone()[0]
        plans["active_at_end"] = int(active_paid)
        distribution_end = {name: 0 for name in cfg.level_names}
        for lv in end_levels.values():
            distribution_end[lv] = distribution_end.get(lv, 0) + 1
        distribution_start = {name: 0 for name in cfg.level_names}
        for lv in start_levels.values():
            distribution_start[lv] = distribution_start.get(lv, 0) + 1
        benefit = {"discounts_fen": acc.discount_fen, "discounted_orders": acc.discounted_orders,
                   "cashback_fen": acc.cashback_fen, "coupons_fen": int(coupons[0] or 0),
                   "coupon_grants": int(coupons[1] or 0)}
        benefit["total_fen"] = benefit["discounts_fen"] + benefit["cashback_fen"] + benefit["coupons_fen"]
        members = {ref: {"level": lv} for ref, lv in end_levels.items()}
        for ref, g in db.execute_sql("SELECT member_ref, growth FROM member").fetchall():
            members[ref]["growth"] = int(g)
        for ref, bal in db.execute_sql(
                f"SELECT c.external_ref, COALESCE(SUM(l.remaining_minor), 0) FROM ledger_lot l "
                f"JOIN ledger_customer c ON c.id = l.customer_id WHERE l.asset = {p} AND l.state = 'open' "
                f"AND (l.expires_at IS NULL OR l.expires_at > {p}) GROUP BY c.external_ref",
                (cfg.points_asset, self.end)).fetchall():
            if ref in members:
                members[ref]["points"] = int(bal)
        for m in members.values():
            m.setdefault("points", 0)
        return {
            "policy_version": cfg.version,
            "members": len(end_levels),
            "levels": {"order": list(cfg.level_names), "start": distribution_start, "end": distribution_end,
                       "monthly": acc.monthly, "transitions": matrix,
                       "promotions": promotions, "demotions": demotions},
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
        from app.services.membership import policy as mp
        self.cfg, self.mp = cfg, mp
        self.start, self.end = start, end
        self.next_day = None
        self.started = False
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
        self.points = {"expired": 0, "redemptions_held": 0}
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

    def event(self, result, discount):
        member = result["member_id"]
        for e in result["growth"]["entries"]:
            self._cut("growth", member, e.get("cuts"))
        for e in result["points"]["entries"]:
            self._cut("points", member, e.get("cuts"))
        for c in result.get("cashback") or []:
            self.cashback_fen += int(c.get("amount_fen") or 0)
        if discount:
            applied = [d for d in discount.get("discounts") or [] if d.get("applied")]
            if applied:
                self.discounted_orders += 1
                self.discount_fen += sum(int(d["amount_fen"]) for d in applied)

    def redemption(self, r):
        if r["status"] == "held":
            self.points["redemptions_held"] += 1

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


def read_partition(path):
    """The records of a partition file written by the planner (one JSON object a line, ``_at`` ISO)."""
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(line)
            rec["_at"] = dt.datetime.fromisoformat(rec["_at"])
            yield rec


def run_task(task, queue=None):
    """Worker process entry: replay one partition of one policy set; the metrics (or an error) go on ``queue``."""
    logging.disable(logging.WARNING)
    label = task["label"]

    def progress(done, total):
        if queue is not None:
            queue.put(("progress", label, task["partition"], done))
    rep = None
    try:
        rep = Replay(task["files"], dt.datetime.fromisoformat(task["from"]), dt.datetime.fromisoformat(task["to"]),
                     task.get("point_value_fen", 1), task.get("workdir")).open()
        out = rep.run(read_partition(task["events_path"]), task.get("total"), progress)
        if queue is not None:
            queue.put(("done", label, task["partition"], out))
        return out
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which fails the run
        log.exception("simulation worker failed")
        if queue is not None:
            queue.put(("error", label, task["partition"], f"{type(exc).__name__}: {exc}"))
        raise
    finally:
        if rep is not None:
            rep.close()
