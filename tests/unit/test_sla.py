"""SLA calendar math: business-hours clocks across lunch breaks, weekends, holidays and make-up workdays."""
import datetime as dt
from pathlib import Path

import pytest
import yaml

from app.platform import calendar as sla

POLICY = yaml.safe_load((Path(__file__).resolve().parents[2] / "policies" / "calendar.yaml").read_text())
BUSINESS = sla.calendar_from_policy(POLICY["calendars"]["business"])  # Mon-Fri 09:00-12:00, 13:30-18:00 +08:00
ALWAYS = sla.calendar_from_policy(POLICY["calendars"]["always"])


def local(text):
    """Asia/Shanghai wall time 'YYYY-MM-DD HH:MM' -> naive UTC."""
    return dt.datetime.fromisoformat(text) - dt.timedelta(hours=8)


H, M = 3600, 60

# (start local, business seconds to add, expected local due) — 2026-11-27 is a Friday.
ADD_CASES = [
    ("2026-11-27 17:00", 2 * H, "2026-11-30 10:00", "across the weekend"),
    ("2026-11-27 11:30", 1 * H, "2026-11-27 14:00", "across the lunch break"),
    ("2026-11-27 11:00", 8 * H, "2026-11-30 11:30", "lunch, evening and weekend"),
    ("2026-11-28 10:00", 30 * M, "2026-11-30 09:30", "starting on a Saturday"),
    ("2026-11-27 12:30", 15 * M, "2026-11-27 13:45", "starting in the lunch break"),
    ("2026-11-27 07:00", 10 * M, "2026-11-27 09:10", "starting before opening"),
    ("2026-11-27 19:00", 1 * H, "2026-11-30 10:00", "starting after closing on Friday"),
    ("2026-11-27 09:00", 3 * H, "2026-11-27 12:00", "ending exactly at a period's close"),
    ("2026-11-27 09:00", 3 * H + 1, "2026-11-27 13:30:01", "one second into the afternoon"),
    ("2026-11-28 10:00", 0, "2026-11-30 09:00", "zero seconds from a closed time is the next opening"),
    ("2026-11-27 10:00", 0, "2026-11-27 10:00", "zero seconds in open time is now"),
    ("2026-09-30 17:30", 1 * H, "2026-10-08 09:30", "National Day holidays and a weekend"),
    ("2026-10-09 17:00", 2 * H, "2026-10-10 10:00", "make-up workday on a Saturday (调休)"),
    ("2026-11-23 09:00", 5 * 7.5 * H, "2026-11-27 18:00", "a whole working week"),
]


@pytest.mark.parametrize("start,seconds,expected,why", ADD_CASES, ids=[c[3] for c in ADD_CASES])
def test_add_business_seconds(start, seconds, expected, why):
    assert sla.add_business_seconds(BUSINESS, local(start), int(seconds)) == local(expected)


# (start local, end local, business seconds between)
BETWEEN_CASES = [
    ("2026-11-27 17:00", "2026-11-30 10:00", 2 * H, "weekend not counted"),
    ("2026-11-27 11:00", "2026-11-27 14:00", 1 * H + 30 * M, "lunch not counted"),
    ("2026-11-28 00:00", "2026-11-29 23:59", 0, "weekend only"),
    ("2026-11-27 12:10", "2026-11-27 13:20", 0, "inside lunch"),
    ("2026-11-23 00:00", "2026-11-30 00:00", 5 * 7.5 * H, "a calendar week"),
    ("2026-09-30 09:00", "2026-10-09 09:00", 7.5 * H + 1 * 7.5 * H, "holidays: only Sep 30 and Oct 8"),
    ("2026-11-27 18:00", "2026-11-27 17:00", 0, "end before start"),
]


@pytest.mark.parametrize("start,end,expected,why", BETWEEN_CASES, ids=[c[3] for c in BETWEEN_CASES])
def test_business_seconds(start, end, expected, why):
    assert sla.business_seconds(BUSINESS, local(start), local(end)) == int(expected)


@pytest.mark.parametrize("seconds", [0, 1, 59, 3600, 10799, 10800, 10801, 27000, 100000, 1000000])
def test_add_then_measure_round_trips(seconds):
    start = local("2026-11-27 11:17")
    due = sla.add_business_seconds(BUSINESS, start, seconds)
    assert sla.business_seconds(BUSINESS, start, due) == seconds


def test_always_open_is_wall_time():
    start = local("2026-11-28 03:00")
    assert sla.add_business_seconds(ALWAYS, start, 90 * M) == start + dt.timedelta(minutes=90)
    assert sla.business_seconds(ALWAYS, start, start + dt.timedelta(days=2)) == 2 * 86400


def test_is_open():
    assert sla.is_open(BUSINESS, local("2026-11-27 10:00"))
    assert not sla.is_open(BUSINESS, local("2026-11-27 12:30"))
    assert not sla.is_open(BUSINESS, local("2026-11-28 10:00"))
    assert not sla.is_open(BUSINESS, local("2026-10-01 10:00"))


def test_calendar_without_open_time_raises():
    closed = sla.calendar_from_policy({"timezone": "Asia/Shanghai", "week": {}})
    with pytest.raises(sla.CalendarError):
        sla.add_business_seconds(closed, local("2026-11-27 10:00"), 60)


def test_other_time_zone_and_dst():
    # New York: DST ends 2026-11-01 (Sunday); business day 09:00-17:00 local.
    ny = sla.calendar_from_policy({"timezone": "America/New_York",
                                   "week": {d: [["09:00", "17:00"]] for d in ("mon", "tue", "wed", "thu", "fri")}})
    start = dt.datetime(2026, 10, 30, 20, 0)  # Fri 16:00 EDT
    # 1 h left Friday (to 17:00 EDT = 21:00Z), then Monday 09:00 EST = 14:00Z
    assert sla.add_business_seconds(ny, start, 2 * H) == dt.datetime(2026, 11, 2, 15, 0)


def test_bad_periods_rejected():
    with pytest.raises(ValueError):
        sla.calendar_from_policy({"timezone": "Asia/Shanghai", "week": {"mon": [["12:00", "09:00"]]}})
    with pytest.raises(ValueError):
        sla.calendar_from_policy({"timezone": "Asia/Shanghai",
                                  "week": {"mon": [["09:00", "12:00"], ["11:00", "13:00"]]}})


@pytest.mark.parametrize("start", ["2026-11-27 10:00", "2026-11-27 11:45", "2026-11-27 17:59", "2026-11-28 09:00",
                                   "2026-11-27 12:30", "2026-11-27 08:59"])
def test_add_many_matches_add_one_by_one(start):
    """One walk for several offsets gives exactly what one walk per offset gives (any order, duplicates)."""
    offsets = [0, 1, 3600, 10800, 10799, 27000, 27000, 100000, 1000000, 59]
    many = sla.add_business_seconds_many(BUSINESS, local(start), offsets)
    assert many == [sla.add_business_seconds(BUSINESS, local(start), s) for s in offsets]
    assert sla.add_business_seconds_many(ALWAYS, local(start), offsets) == [
        sla.add_business_seconds(ALWAYS, local(start), s) for s in offsets]
    assert sla.add_business_seconds_many(BUSINESS, local(start), []) == []
    with pytest.raises(ValueError):
        sla.add_business_seconds_many(BUSINESS, local(start), [5, -1])
