"""The simulation's member state: everything the membership decisions read and write, in memory.

It implements the methods of ``app.services.membership.state.LiveState`` (the live database) for one
partition of members; the decision functions of the membership context run unchanged against it. It
keeps only what a decision reads back (members, cap counters of open windows, order totals, per-order
sums, points lots, cash, subscriptions and paid periods) and the report's running totals; journal rows,
the decision log and event bodies are not kept.
"""
import contextlib
import heapq
import itertools
from types import SimpleNamespace

from app.errors import Problem
from app.platform import clock
from app.services.membership.state import LIVE_SUBSCRIPTION, Counter


class SimMember:
    """The member columns the decisions read and write."""
    __slots__ = ("id", "member_ref", "joined_at", "growth", "level", "level_since", "level_valid_until",
                 "updated_at")

    def __init__(self, id, member_ref, joined_at, level):
        self.id, self.member_ref, self.joined_at = id, member_ref, joined_at
        self.growth, self.level, self.level_since, self.level_valid_until = 0, level, joined_at, None
        self.updated_at = joined_at


def _insufficient(needed, available, account):
    """The ledger's refusal of a spend it cannot cover (same code and fields as the live ledger's)."""
    return Problem(409, "insufficient-funds", "Insufficient funds",
                   f"{account}: needs {needed}, available {available}", needed=needed, available=available,
                   account=account)


class MemoryState:
    """One partition's state (see the module docstring); ``live`` is False (no transactions, no budget deferral)."""

    live = False
    keeps_decisions = False  # no decision log (see LiveState.keeps_decisions)

    def __init__(self, cfg, start, end):
        self.cfg, self.start, self.end = cfg, start, end
        self.members = {}
        self._ids = itertools.count(1)
        self.counters = {}  # window -> {(scope, cap): Counter}
        self.events = {}  # event_id -> digest (idempotency by event id)
        # (member, order) -> [paid, refunded, growth earned, growth clawed back, points earned, points clawed
        # back, cashback earned, cashback clawed back]: one record per order
        self.orders = {}
        self._last_order = (None, None, None)  # (member, order, record) of the last order touched
        self.deducted = {}  # member -> last deduction instant
        self.deduct_keys = set()
        self.keep_earned = cfg.deduction.get("method") in ("weighted_window", "reset")
        self.earned = {}  # member -> [(at, delta)] (only for deductions that read earnings by date)
        self.lots = {}  # member -> {expires_at: remaining}
        self.expiring = []  # heap of expiry instants
        self.expiring_by = {}  # expiry instant -> members holding points that expire then
        self.cash = {}  # member -> cash.available
        self.cashback = {}  # member -> cash.cashback
        self.redemptions = {}
        self.subs = {}  # id -> subscription
        # Live subscriptions by period end, for the daily job (``_due_by``): a heap of (current_end, id), stale
        # entries left in it, and the ids already found due (live, current_end passed), rechecked when asked.
        self._ends = []
        self._due = set()
        self.subs_of = {}  # member -> [subscription]
        self._sub_ids = itertools.count(1)
        self.periods = {}  # member -> [(start, end, plan, price_fen, kind)]
        self.level_touched = set()  # members whose level or plan changed (coupon eligibility)
        # report totals (entries dated inside the window)
        self.growth_totals = {"earn": [0, 0], "clawback": [0, 0], "deduct": [0, 0]}
        self.points_totals = {"earn": [0, 0], "clawback": [0, 0], "redeem": [0, 0]}
        self.promotions = self.demotions = 0
        self.points_expired = 0
        self.held_redemptions = 0

    def in_window(self, at):
        return self.start <= at <= self.end

    # ---- members ------------------------------------------------------------------------------

    def member(self, cfg, member_ref, at):
        m = self.members.get(member_ref)
        if m is None:
            m = self.members[member_ref] = SimMember(next(self._ids), member_ref, at, cfg.levels[0]["name"])
        return m

    def existing_member(self, member_ref):
        return self.members.get(member_ref)

    def member_refs(self):
        return iter(list(self.members))

    def save_member(self, member):
        member.updated_at = clock.now()

    def level_change(self, values):
        self.level_touched.add(values["member_ref"])
        if self.in_window(values["at"]):
            cfg = self.cfg
            if cfg.level_index(values["to_level"]) > cfg.level_index(values["from_level"] or cfg.level_names[0]):
                self.promotions += 1
            else:
                self.demotions += 1

    def decision(self, ruleset, version, rule, subject, inputs, outcome):
        return None

    # ---- caps -------------------------------------------------------------------------------------

    def counter(self, scope, cap, window, lock=True):
        slot = self.counters.get(window)
        if slot is None:
            slot = self.counters[window] = {}
        row = slot.get((scope, cap))
        if row is None:
            row = slot[(scope, cap)] = Counter(None, 0, 0)
        return row

    def charge(self, rows, amount, count=1):
        for row in rows:
            row.amount += amount
            row.count += count

    def forget_days_before(self, day_key):
        """Drop the counters of day windows before ``day_key`` (events come in time order: never read again)."""
        for window in [w for w in self.counters if len(w) == 10 and w < day_key]:
            del self.counters[window]

    # ---- events and orders ----------------------------------------------------------------------

    def stored_event(self, event_id):
        digest = self.events.get(event_id)
        if digest is None:
            return None
        return SimpleNamespace(event_id=event_id, digest=digest, result='{"replayed": true}')

    def store_event(self, event, digest, at, paid, version, result):
        self.events[event["event_id"]] = digest
        order_ref = event.get("order_ref")
        typ = event["type"]
        if order_ref and event.get("amount_fen") is not None and typ in ("order_paid", "order_refunded"):
            self._order(event["member_id"], order_ref)[0 if typ == "order_paid" else 1] += int(event["amount_fen"])

    def update_event_result(self, event_id, result):
        pass

    def _order(self, member_ref, order_ref):
        last = self._last_order  # an order event reads and writes its order's record several times
        if last[1] == order_ref and last[0] == member_ref:
            return last[2]
        slot = self.orders.get((member_ref, order_ref))
        if slot is None:
            slot = self.orders[(member_ref, order_ref)] = [0, 0, 0, 0, 0, 0, 0, 0]
        self._last_order = (member_ref, order_ref, slot)
        return slot

    def _pair(self, member_ref, order_ref, i):
        last = self._last_order
        slot = last[2] if last[1] == order_ref and last[0] == member_ref else self.orders.get((member_ref, order_ref))
        return (slot[i], slot[i + 1]) if slot else (0, 0)

    def order_totals(self, order_ref, member_ref):
        return self._pair(member_ref, order_ref, 0)

    # ---- growth journal ---------------------------------------------------------------------------

    def growth_entry(self, values):
        kind, ref, at = values["kind"], values["member_ref"], values["at"]
        if self.in_window(at):
            tot = self.growth_totals[kind]
            tot[0] += values["delta"]
            tot[1] += values["cut"]
        if kind == "deduct":
            self.deducted[ref] = max(at, self.deducted.get(ref, at))
            self.deduct_keys.add(values["entry_key"])
            return
        if values.get("order_ref"):
            slot = self._order(ref, values["order_ref"])
            if kind == "earn":
                slot[2] += values["delta"]
            else:
                slot[3] += values["cut"] - values["delta"]
        if self.keep_earned:
            self.earned.setdefault(ref, []).append((at, values["delta"]))

    def growth_of_order(self, member_ref, order_ref):
        return self._pair(member_ref, order_ref, 2)

    def last_deduction(self, member_ref):
        return self.deducted.get(member_ref)

    def has_growth_entry(self, entry_key):
        return entry_key in self.deduct_keys

    def earned_between(self, member_ref, start, end):
        return sum(d for at, d in self.earned.get(member_ref, ()) if start <= at < end)

    # ---- points -------------------------------------------------------------------------------------

    def points_award(self, values, later=True):
        kind = values["kind"]
        if self.in_window(values["at"]):
            tot = self.points_totals[kind]
            tot[0] += values["points"]
            tot[1] += values.get("cut") or 0
        order_ref = values.get("order_ref")
        if order_ref and kind in ("earn", "clawback"):
            slot = self._order(values["member_ref"], order_ref)
            if kind == "earn":
                slot[4] += values["points"]
            else:
                slot[5] += values["cut"] - values["points"]

    def points_of_order(self, member_ref, order_ref):
        return self._pair(member_ref, order_ref, 4)

    def grant_points(self, cfg, member_ref, points, expires_at, key, actor, memo):
        """A points lot; lots of one member with the same expiry are kept as one (spent, expired and counted
        alike: earliest expiry first, all at once at their date)."""
        lots = self.lots.get(member_ref)
        if lots is None:
            lots = self.lots[member_ref] = {}
        have = lots.get(expires_at)
        if have is not None:  # the member is listed under this expiry already (until it passes, with the lot)
            lots[expires_at] = have + points
            return None
        lots[expires_at] = points
        if expires_at is not None:
            holders = self.expiring_by.get(expires_at)
            if holders is None:
                holders = self.expiring_by[expires_at] = set()
                heapq.heappush(self.expiring, expires_at)
            holders.add(member_ref)
        return None

    def _live_lots(self, member_ref, now):
        return [(exp, left) for exp, left in self.lots.get(member_ref, {}).items()
                if left > 0 and (exp is None or exp > now)]

    def spend_points(self, cfg, member_ref, points, key, actor, memo):
        """Earliest expiry first, never-expiring lots last (the ledger's spend_lot)."""
        now = clock.now()
        live = sorted(self._live_lots(member_ref, now), key=lambda lot: (lot[0] is None, lot[0] or now))
        spendable = sum(left for _, left in live)
        if points > spendable:
            raise _insufficient(points, spendable, f"{member_ref}:points")
        lots, left = self.lots[member_ref], points
        for exp, have in live:
            if left == 0:
                break
            take = min(left, have)
            lots[exp] = have - take
            left -= take
        return None

    def points_balance(self, cfg, member_ref):
        return sum(left for _, left in self._live_lots(member_ref, clock.now()))

    def expire_lots(self, at):
        """Expire every lot whose expiry is <= ``at`` (the ledger's expiry job); returns the points expired."""
        out = 0
        while self.expiring and self.expiring[0] <= at:
            exp = heapq.heappop(self.expiring)
            for ref in self.expiring_by.pop(exp):
                out += self.lots[ref].pop(exp, 0)
        return out

    def outstanding(self, at):
        """{member: points not expired at ``at``} for every member that was ever granted points (one pass)."""
        out = {}
        for ref, lots in self.lots.items():
            held = 0
            for exp, left in lots.items():
                if exp is None or exp > at:
                    held += left
            out[ref] = held
        return out

    def redemption(self, redemption_id):
        return self.redemptions.get(redemption_id)

    def add_redemption(self, values):
        r = SimpleNamespace(**{"reason": None, "journal": None, "decided_at": None, "decided_by": None, **values})
        self.redemptions[values["redemption_id"]] = r
        if values["status"] == "held" and self.in_window(values["at"]):
            self.held_redemptions += 1
        return r

    # ---- cashback -----------------------------------------------------------------------------------

    def cashback_award(self, values):
        slot = self._order(values["member_ref"], values["order_ref"])
        if values["kind"] == "earn":
            slot[6] += values["amount_fen"]
        else:
            slot[7] += values["cut"] - values["amount_fen"]

    def cashback_of_order(self, member_ref, order_ref):
        return self._pair(member_ref, order_ref, 6)

    def credit_cashback(self, member_ref, amount, key, actor, memo):
        self.cashback[member_ref] = self.cashback.get(member_ref, 0) + amount

    def debit_cashback(self, member_ref, amount, key, actor, memo):
        have = self.cashback.get(member_ref, 0)
        if amount > have:
            raise _insufficient(amount, have, f"{member_ref}:cash.cashback")
        self.cashback[member_ref] = have - amount

    # ---- paid plans -----------------------------------------------------------------------------------

    def plan_at(self, member_ref, at):
        best = None
        for p in self.periods.get(member_ref, ()):
            if p[0] <= at < p[1] and (best is None or p[0] >= best[0]):
                best = p
        return None if best is None else best[2]

    def paid_periods(self, member_ref, at):
        out = {}
        for start, _, code, price, _ in self.periods.get(member_ref, ()):
            if start <= at:
                n, fen = out.get(code, (0, 0))
                out[code] = (n + 1, fen + price)
        return out

    def live_subscription(self, member_ref, at):
        for sub in reversed(self.subs_of.get(member_ref, ())):
            if sub.status in LIVE_SUBSCRIPTION and sub.current_end > at:
                return sub
        return None

    def subscription_locked(self, sub_id):
        return self.subs[sub_id]

    def add_subscription(self, values):
        sub = SimpleNamespace(**{"renew_attempts": 0, "next_attempt_at": None, "last_failure": None, "ended_at": None,
                                 **values, "id": next(self._sub_ids)})
        self.subs[sub.id] = sub
        self.subs_of.setdefault(sub.member_ref, []).append(sub)
        self._watch(sub)
        return sub

    def update_subscription(self, sub, **changes):
        for k, v in changes.items():
            setattr(sub, k, v)
        if "current_end" in changes or "status" in changes:
            self._due.discard(sub.id)
            self._watch(sub)

    def _watch(self, sub):
        if sub.status in LIVE_SUBSCRIPTION:
            heapq.heappush(self._ends, (sub.current_end, sub.id))

    def _due_by(self, until):
        """Ids of the live subscriptions whose period ends by ``until``, in id order (the subscriptions table's)."""
        ends, subs = self._ends, self.subs
        while ends and ends[0][0] <= until:
            end, sid = heapq.heappop(ends)
            sub = subs[sid]
            if sub.current_end == end and sub.status in LIVE_SUBSCRIPTION:  # else a later entry stands for it
                self._due.add(sid)
        return sorted(sid for sid in self._due if subs[sid].current_end <= until)

    def add_period(self, values):
        ref = values["member_ref"]
        self.periods.setdefault(ref, []).append((values["start"], values["end"], values["plan"],
                                                 int(values["price_fen"]), values["kind"]))
        self.level_touched.add(ref)

    def renewals_due(self, until):
        return [sid for sid in self._due_by(until) if self.subs[sid].status == "active" and self.subs[sid].auto_renew]

    def subscriptions_ended(self, at):
        return self._due_by(at)

    def pay_plan(self, cfg, sub, plan, start, payment, payment_ref, actor):
        price = int(plan["price_fen"])
        ref = sub.member_ref
        if payment == "external":  # the payment comes into cash.available, the fee goes out of it
            self.cash[ref] = self.cash.get(ref, 0) + price
        have = self.cash.get(ref, 0)
        if price > have:
            raise _insufficient(price, have, f"{ref}:cash.available")
        self.cash[ref] = have - price
        return None

    def atomic(self):
        return contextlib.nullcontext()
