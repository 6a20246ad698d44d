"""Membership policy access: the membership/points/benefits/plans documents compiled per policy version, time windows, cross-checks."""
import bisect
import calendar
import datetime as dt
from zoneinfo import ZoneInfo

from app import engine, policy
from app.models.policy import Decision
from app.policy import decisions
from app.platform import sql as fastsql
from app.platform.timefmt import in_zone, naive_utc
from app.errors import Problem

BUILTIN_EVENT_TYPES = ("order_paid", "order_refunded", "sign_in", "share", "task_completed",
                       "review_posted", "active_day")



class Config:
    """The four membership policy documents of one policy set, with lookups prepared once."""

    def __init__(self, ps):
        self.version = ps.version
        self.ps = ps
        self.membership = _one(ps, "membership")
        self.points = _one(ps, "points") or {}
        self.benefits = _one(ps, "benefits") or {}
        self.plans_doc = _one(ps, "plans") or {}
        if not self.membership:
            raise Problem(503, "membership-policy-missing", "Membership policy missing",
                          "The active policy set has no document of kind 'membership'.")
        m = self.membership
        self.mode = m.get("mode", "ladder")
        self.tz = ZoneInfo(m.get("timezone") or _config_tz())
        self.levels = sorted(m["levels"], key=lambda lv: lv["threshold"])
        self._thresholds = [lv["threshold"] for lv in self.levels]
        self.level_names = [lv["name"] for lv in self.levels]
        self.event_types = set(BUILTIN_EVENT_TYPES) | set(m.get("event_types") or [])
        growth = m.get("growth") or {}
        self.growth_ruleset = growth.get("ruleset", "growth")
        self.growth_caps = growth.get("caps") or []
        self.refund_clawback = growth.get("refund_clawback", True)
        self.deduction = m.get("deduction") or {}
        self.points_ruleset = self.points.get("ruleset", "points")
        self.points_asset = self.points.get("asset", "POINTS")
        self.plans = {p["code"]: p for p in self.plans_doc.get("plans") or []}
        self.renewal = self.plans_doc.get("renewal") or {}
        self.catalogue = {b["name"]: b for b in self.benefits.get("catalogue") or []}
        self.by_level = self.benefits.get("levels") or {}
        self.by_plan = self.benefits.get("plans") or {}
        self._caps = {}
        self._windows = {}  # (local date, window) -> window key
        self._benefits_memo = {}  # benefits answers by level and plan (benefits._once)
        self._expiry_by_day = {}
        self._deduction_due = {}  # local date -> the calendar deduction due at or before it (growth._last_due)
        self._last_day = (None, None)

    def matching_caps(self, prefix, caps, event, matches, max_field="max"):
        """The caps of ``caps`` (a list of this Config) that apply to an event's type and channel, worked out
        once per (prefix, type, channel) with ``matches``: caps read nothing else of the event.

        Returns:
            [(cap, counter name ``<prefix>:<name>``, window, limit ``cap[max_field]``)].
        """
        key = (prefix, event["type"], event.get("channel"), max_field)
        got = self._caps.get(key)
        if got is None:
            got = self._caps[key] = [(cap, f"{prefix}:{cap['name']}", cap.get("window", "day"), int(cap[max_field]))
                                     for cap in caps if matches(cap, event)]
        return got

    def local_date(self, instant):
        """The policy-zone calendar date of a naive UTC instant (the last answer is kept: an event asks often)."""
        last = self._last_day
        if last[0] != instant:
            last = self._last_day = (instant, local(self, instant).date())
        return last[1]

    def level_for(self, growth):
        """(level name, index) of the highest level whose threshold ``growth`` reaches (else the first)."""
        idx = max(0, bisect.bisect_right(self._thresholds, growth) - 1)
        return self.levels[idx]["name"], idx

    def level_index(self, name):
        try:
            return self.level_names.index(name)
        except ValueError:
            return 0


def _config_tz():
    try:
        from flask import current_app
        return current_app.config.get("TIMEZONE") or "Asia/Shanghai"
    except RuntimeError:
        return "Asia/Shanghai"


def _one(ps, kind):
    docs = ps.get(kind)
    return docs[0] if docs else None


def current():
    """The compiled membership configuration of the active policy set (once per version)."""
    return policy.derived("membership", Config)


# ---- time ---------------------------------------------------------------------------------------

def local(cfg, instant):
    """A naive UTC instant as an aware time in the policy zone."""
    return in_zone(instant, cfg.tz)


to_utc = naive_utc  # an aware time as naive UTC


def window_key(cfg, instant, window):
    """The cap window an instant falls in, in the policy time zone: day, week (ISO) or month."""
    d = cfg.local_date(instant)
    known = cfg._windows.get((d, window))
    if known is None:
        known = cfg._windows[(d, window)] = _window_key(d, window)
    return known


def _window_key(d, window):
    if window == "day":
        return d.isoformat()
    if window == "week":
        y, w, _ = d.isocalendar()
        return f"{y}-W{w:02d}"
    if window == "month":
        return f"{d.year}-{d.month:02d}"
    if window == "year":
        return str(d.year)
    raise ValueError(window)


def add_months(aware, months):
    y, m = divmod(aware.month - 1 + months, 12)
    year, month = aware.year + y, m + 1
    day = min(aware.day, calendar.monthrange(year, month)[1])
    return aware.replace(year=year, month=month, day=day)


def points_expiry(cfg, earned_at):
    """When points earned at ``earned_at`` expire (exclusive instant, naive UTC), per policy.

    natural_year_end: the start of the year after (earned year + years_after), local time;
    fiscal_year_end: the day after the fiscal year end (MM-DD) that closes the earning year (+ years_after);
    rolling_months: earned_at + N months. No expiry section -> None (never).
    """
    exp = cfg.points.get("expiry")
    if not exp:
        return None
    by_day = getattr(cfg, "_expiry_by_day", None)
    if by_day is None or exp["mode"] == "rolling_months":
        return _expiry(cfg, exp, earned_at)
    day = cfg.local_date(earned_at)  # year-end modes: the answer depends on the local date only
    got = by_day.get(day)
    if got is None:
        got = by_day[day] = _expiry(cfg, exp, earned_at)
    return got


def _expiry(cfg, exp, earned_at):
    loc = local(cfg, earned_at)
    mode = exp["mode"]
    after = int(exp.get("years_after", 0))
    if mode == "natural_year_end":
        boundary = dt.datetime(loc.year + after + 1, 1, 1, tzinfo=cfg.tz)
    elif mode == "fiscal_year_end":
        mm, dd = (int(x) for x in exp["fiscal_year_end"].split("-"))
        end = dt.datetime(loc.year, mm, dd, tzinfo=cfg.tz) + dt.timedelta(days=1)
        if loc >= end:
            end = dt.datetime(loc.year + 1, mm, dd, tzinfo=cfg.tz) + dt.timedelta(days=1)
        boundary = end.replace(year=end.year + after)
    elif mode == "rolling_months":
        boundary = add_months(loc, int(exp["months"]))
    else:
        raise ValueError(mode)
    return to_utc(boundary)


# ---- rules engine and decision log --------------------------------------------------------------

def evaluate(ruleset, facts, policy_set=None):
    """(matches, version) of a ruleset over facts, through the policy engine (pure, no side effects).

    ``policy_set`` is the set the Config was built from (``cfg.ps``), so a candidate Config (simulation,
    shadow) evaluates its own rules; None means the active set.
    """
    ev = engine.evaluate(ruleset, facts, policy_set)
    return ev.matches, ev.version


def record_decision(ruleset, version, rule, subject, inputs, outcome):
    """Record a state-changing decision in the policy decision log (in the caller's transaction)."""
    if not fastsql.active():
        return decisions.record(ruleset, version, rule, subject, inputs, outcome)
    # inside an event: the row decisions.record writes, sent with the event's other writes
    values = decisions.row(ruleset, version, rule, subject, inputs, outcome)
    fastsql.insert_later(Decision, values)
    return values["decision_id"]
