"""Business-hours calendar math for SLA clocks: pure functions over naive-UTC datetimes."""
import datetime as dt
from dataclasses import dataclass, field
from functools import lru_cache
from zoneinfo import ZoneInfo

from app.platform.timefmt import in_zone, naive_utc

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# A calendar with no open period for this many days is treated as broken rather than looping forever.
MAX_CLOSED_DAYS = 3 * 366


class CalendarError(ValueError):
    """The calendar cannot advance (no open period within MAX_CLOSED_DAYS)."""


@dataclass(frozen=True)
class Calendar:
    """Open periods per weekday in a time zone, with holidays (closed) and make-up workdays.

    Attributes:
        timezone: IANA zone name, e.g. ``Asia/Shanghai``.
        week: 7 tuples (Mon..Sun) of (start_minute, end_minute) local periods, sorted, not overlapping.
        holidays: local dates that are closed all day.
        workdays: local dates that open with ``workday_periods`` even if their weekday is closed (调休).
        workday_periods: periods for make-up workdays.
        always_open: 24x7 (the other fields are ignored).
    """
    timezone: str = "Asia/Shanghai"
    week: tuple = ((),) * 7
    holidays: frozenset = frozenset()
    workdays: frozenset = frozenset()
    workday_periods: tuple = ()
    always_open: bool = False
    # Open periods of each local date already worked out, as naive-UTC (open, close) pairs (``_day_spans``):
    # outside equality and hashing, so the Calendar stays a value.
    spans: dict = field(default_factory=dict, compare=False, hash=False, repr=False)

    @property
    def tz(self):
        return _zone(self.timezone)

    def periods_on(self, day):
        """The open periods (start_minute, end_minute) on a local date."""
        if day in self.holidays:
            return ()
        if day in self.workdays:
            return self.workday_periods
        return self.week[day.weekday()]


@lru_cache(maxsize=64)
def _zone(name):
    return ZoneInfo(name)


def _minutes(text):
    hours, _, minutes = str(text).partition(":")
    value = int(hours) * 60 + int(minutes)
    if not 0 <= value <= 24 * 60:
        raise ValueError(f"time of day out of range: {text!r}")
    return value


def _periods(raw):
    out = sorted((_minutes(a), _minutes(b)) for a, b in raw or ())
    for (a, b), nxt in zip(out, out[1:] + [None]):
        if a >= b:
            raise ValueError(f"empty or inverted period {a // 60:02d}:{a % 60:02d}-{b // 60:02d}:{b % 60:02d}")
        if nxt is not None and nxt[0] < b:
            raise ValueError("overlapping periods")
    return tuple(out)


def calendar_from_policy(doc):
    """Build a Calendar from one entry of the ``calendar`` policy.

    Args:
        doc: ``{timezone, always_open?, week: {mon: [["09:00","12:00"], ...], ...},
              holidays: ["2026-10-01", ...], workdays: ["2026-09-27", ...], workday_periods?}``.

    Returns:
        Calendar.
    """
    week = doc.get("week") or {}
    weekly = tuple(_periods(week.get(name)) for name in WEEKDAYS)
    default_workday = next((p for p in weekly[:5] if p), ())
    return Calendar(
        timezone=doc.get("timezone", "Asia/Shanghai"),
        week=weekly,
        holidays=frozenset(dt.date.fromisoformat(str(d)) for d in doc.get("holidays") or ()),
        workdays=frozenset(dt.date.fromisoformat(str(d)) for d in doc.get("workdays") or ()),
        workday_periods=_periods(doc["workday_periods"]) if doc.get("workday_periods") else default_workday,
        always_open=bool(doc.get("always_open")),
    )


def _to_local(cal, utc_naive):
    return in_zone(utc_naive, cal.tz)


def local_date(cal, utc_naive):
    """The calendar's local date (its business day: statistics, budgets) at a naive-UTC instant."""
    return _to_local(cal, utc_naive).date()


_to_utc = naive_utc


def _local_at(cal, day, minute):
    # Wall-clock arithmetic on the zone's midnight (an aware time plus a timedelta keeps its wall clock):
    # a DST day keeps its local periods.
    return dt.datetime.combine(day, _MIDNIGHT, cal.tz) + dt.timedelta(minutes=minute)


_MIDNIGHT = dt.time(0)


def _open_intervals(cal, start_utc):
    """Yield (open_utc, close_utc) business intervals that end after start_utc, in order."""
    local = _to_local(cal, start_utc)
    day = local.date()
    closed_days = 0
    while True:
        spans = _day_spans(cal, day)
        if not spans:
            closed_days += 1
            if closed_days > MAX_CLOSED_DAYS:
                raise CalendarError("calendar has no open period within three years")
        else:
            closed_days = 0
        for open_utc, close_utc in spans:
            if close_utc > start_utc:
                yield max(open_utc, start_utc), close_utc
        day += dt.timedelta(days=1)


def _day_spans(cal, day):
    """The open periods of a local date as naive-UTC (open, close) pairs, worked out once per date."""
    got = cal.spans.get(day)
    if got is None:
        got = cal.spans[day] = tuple((_to_utc(_local_at(cal, day, a)), _to_utc(_local_at(cal, day, b)))
                                     for a, b in cal.periods_on(day))
    return got


def business_seconds(cal, start_utc, end_utc):
    """Open seconds of ``cal`` between two naive-UTC instants (0 if end <= start).

    Args:
        cal: Calendar.
        start_utc: naive UTC datetime.
        end_utc: naive UTC datetime.

    Returns:
        int seconds (fractions of a second are dropped).
    """
    if end_utc <= start_utc:
        return 0
    if cal.always_open:
        return int((end_utc - start_utc).total_seconds())
    total = 0.0
    for open_utc, close_utc in _open_intervals(cal, start_utc):
        if open_utc >= end_utc:
            break
        total += (min(close_utc, end_utc) - open_utc).total_seconds()
    return int(total)


def add_business_seconds(cal, start_utc, seconds):
    """The naive-UTC instant at which ``seconds`` of open time have passed since ``start_utc``.

    Starting outside business hours, the clock starts at the next opening. ``seconds == 0``
    returns the next open instant (or start itself when open).

    Args:
        cal: Calendar.
        start_utc: naive UTC datetime.
        seconds: non-negative int.

    Returns:
        naive UTC datetime.
    """
    if seconds < 0:
        raise ValueError("seconds must be >= 0")
    if cal.always_open:
        return start_utc + dt.timedelta(seconds=seconds)
    remaining = dt.timedelta(seconds=seconds)
    for open_utc, close_utc in _open_intervals(cal, start_utc):
        span = close_utc - open_utc
        if remaining <= span:
            return open_utc + remaining
        remaining -= span
    raise CalendarError("unreachable")  # pragma: no cover - the generator never ends


def add_business_seconds_many(cal, start_utc, seconds_list):
    """``add_business_seconds`` for several offsets from one start, in one walk over the calendar.

    Args:
        cal: Calendar.
        start_utc: naive UTC datetime.
        seconds_list: non-negative ints, any order.

    Returns:
        list of naive UTC datetimes, in the order of ``seconds_list``.
    """
    if any(s < 0 for s in seconds_list):
        raise ValueError("seconds must be >= 0")
    if cal.always_open or not seconds_list:
        return [start_utc + dt.timedelta(seconds=s) for s in seconds_list]
    order = sorted(range(len(seconds_list)), key=seconds_list.__getitem__)
    out = [None] * len(seconds_list)
    passed, k = dt.timedelta(0), 0  # open time before the current interval; next offset to place
    for open_utc, close_utc in _open_intervals(cal, start_utc):
        span = close_utc - open_utc
        while k < len(order) and dt.timedelta(seconds=seconds_list[order[k]]) - passed <= span:
            out[order[k]] = open_utc + (dt.timedelta(seconds=seconds_list[order[k]]) - passed)
            k += 1
        if k == len(order):
            return out
        passed += span
    raise CalendarError("unreachable")  # pragma: no cover - the generator never ends


def is_open(cal, at_utc):
    """True when ``at_utc`` falls inside an open period."""
    if cal.always_open:
        return True
    for open_utc, close_utc in _open_intervals(cal, at_utc):
        return open_utc <= at_utc < close_utc
    return False  # pragma: no cover


def day_start(cal, day):
    """The instant (naive UTC) the business day ``day`` begins in the calendar's time zone."""
    return _to_utc(_local_at(cal, day, 0))
