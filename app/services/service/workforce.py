"""Shifts and attendance (排班考勤): rosters on the business calendar, going online in a shift, attendance from the
presence log, the capacity forecast per skill group and hour, the supervisor on shift who receives an escalation.

Rosters are local times of the workforce calendar's zone; everything stored is UTC. A day's shifts are the
weekly pattern of that weekday (none on a holiday of the calendar; a make-up workday follows the policy's
weekday), minus leave, plus extra shifts.
"""
import datetime as dt
import json
from dataclasses import dataclass

from app.db import write_transaction
from app.errors import Problem, not_found
from app.models.service_ops import ServicePresence, ServiceRoster, ServiceShiftException
from app.models.staff import Staff
from app.platform import calendar as calmath, clock
from app.platform.timefmt import iso

WEEKDAYS = calmath.WEEKDAYS
RULESET = "workforce"


@dataclass
class WorkforceConfig:
    version: str
    doc: dict
    calendar: object

    @property
    def tz(self):
        return self.calendar.tz

    def minutes(self, name):
        return int(self.doc.get(name, 0))


def current():
    """The WorkforceConfig of the active set (503 ``policy-missing`` without a single workforce policy)."""
    from app import policy
    return policy.derived("workforce", build)


def build(ps):
    from app.services.service.policy import with_calendar
    doc, calendar = with_calendar(ps, "workforce")
    return WorkforceConfig(version=ps.version, doc=doc, calendar=calendar)


def cross_check(ps):
    """The workforce calendar exists in the calendar policy."""
    docs = ps.get("workforce")
    cal = ps.get("calendar")
    if not docs or not cal:
        return []
    doc = docs[0]
    if doc.get("calendar") not in (cal[0].get("calendars") or {}):
        return [f"{doc.get('_file', 'policies/workforce.yaml')}: $.calendar: unknown calendar {doc.get('calendar')!r}"]
    return []


# --- local time ------------------------------------------------------------------------------------

def _minute(text):
    hours, _, minutes = str(text).partition(":")
    return int(hours) * 60 + int(minutes)


def _hhmm(minute):
    return f"{minute // 60:02d}:{minute % 60:02d}"


def _utc(cfg, day, minute):
    local = (dt.datetime.combine(day, dt.time(0)) + dt.timedelta(minutes=minute)).replace(tzinfo=cfg.tz)
    return local.astimezone(dt.timezone.utc).replace(tzinfo=None)


def local_day(cfg, at_utc):
    """The local date of a naive-UTC instant in the workforce zone."""
    return at_utc.replace(tzinfo=dt.timezone.utc).astimezone(cfg.tz).date()


def parse_day(text, pointer):
    try:
        return dt.date.fromisoformat(str(text))
    except ValueError:
        raise Problem(422, "validation-failed", "Validation failed", f"{pointer}: expected YYYY-MM-DD",
                      errors=[{"pointer": pointer, "validator": "format", "message": "expected YYYY-MM-DD"}]) from None


def _periods(raw, pointer):
    out = []
    for i, (a, b) in enumerate(raw or ()):
        start, end = _minute(a), _minute(b)
        if not 0 <= start < end <= 24 * 60:
            raise Problem(422, "invalid-shift", "Invalid shift", f"{pointer}/{i}: {a}-{b} is empty or out of the day")
        out.append((start, end))
    out.sort()
    for (a, b), (c, d) in zip(out, out[1:]):
        if c < b:
            raise Problem(422, "invalid-shift", "Invalid shift", f"{pointer}: periods overlap")
    return out


# --- rosters -----------------------------------------------------------------------------------------

def _active_staff(staff_no):
    from app.services.service import desk  # desk logs presence through this module: imported when used
    return desk.active_staff(staff_no)


def _check_group(staff, group):
    """A roster's group: a skill group the staff member's roles staff, or their own department (supervisors and
    back-office staff have shifts too: an escalation goes to a supervisor on shift)."""
    from app.services.service.policy import current as service_config
    scfg = service_config()
    if group == staff.department:
        return
    scfg.group(group)
    if group not in scfg.groups_for(staff.role_list):
        raise Problem(422, "not-in-group", "Not in skill group",
                      f"{staff.staff_no} (roles {staff.role_list}) does not staff {group}",
                      allowed=scfg.groups_for(staff.role_list))


def roster_dict(r):
    return {"id": r.id, "staff_no": r.staff_no, "group": r.group, "week": json.loads(r.week),
            "valid_from": r.valid_from, "valid_to": r.valid_to, "updated_by": r.updated_by,
            "updated_at": iso(r.updated_at)}


def put_roster(actor, staff_no, group, body):
    """Set (create or replace) an agent's weekly pattern in a skill group.

    Args:
        actor: who edits (staff number).
        staff_no: the agent.
        group: a skill group of the service policy the agent's roles staff.
        body: {week: {mon: [["09:00","18:00"]], ...}, valid_from: date, valid_to?: date}.

    Returns:
        the roster dict.
    """
    staff = _active_staff(staff_no)
    _check_group(staff, group)
    week = {}
    for name in WEEKDAYS:
        periods = _periods((body.get("week") or {}).get(name), f"/week/{name}")
        if periods:
            week[name] = [[_hhmm(a), _hhmm(b)] for a, b in periods]
    valid_from = parse_day(body["valid_from"], "/valid_from").isoformat()
    valid_to = parse_day(body["valid_to"], "/valid_to").isoformat() if body.get("valid_to") else None
    if valid_to is not None and valid_to < valid_from:
        raise Problem(422, "invalid-shift", "Invalid shift", "valid_to is before valid_from")
    now = clock.now()
    fields = {"week": json.dumps(week, separators=(",", ":")), "valid_from": valid_from, "valid_to": valid_to,
              "updated_by": actor, "updated_at": now}
    with write_transaction():
        n = ServiceRoster.update(fields).where((ServiceRoster.staff_no == staff_no)
                                               & (ServiceRoster.group == group)).execute()
        if not n:
            ServiceRoster.insert(dict(fields, staff_no=staff_no, group=group)).on_conflict_ignore().execute()
            ServiceRoster.update(fields).where((ServiceRoster.staff_no == staff_no)
                                               & (ServiceRoster.group == group)).execute()
    return roster_dict(ServiceRoster.get((ServiceRoster.staff_no == staff_no) & (ServiceRoster.group == group)))


def delete_roster(staff_no, group):
    with write_transaction():
        n = (ServiceRoster.delete().where((ServiceRoster.staff_no == staff_no) & (ServiceRoster.group == group))
             .execute())
    if not n:
        raise not_found("roster", f"{staff_no}/{group}")
    return {"deleted": True}


def list_rosters(staff_no=None, group=None):
    q = ServiceRoster.select().order_by(ServiceRoster.staff_no, ServiceRoster.group)
    if staff_no:
        q = q.where(ServiceRoster.staff_no == staff_no)
    if group:
        q = q.where(ServiceRoster.group == group)
    return [roster_dict(r) for r in q]


def exception_dict(e):
    whole = e.start_minute is None
    return {"id": e.id, "staff_no": e.staff_no, "date": e.day, "kind": e.kind, "group": e.group,
            "start": None if whole else _hhmm(e.start_minute), "end": None if whole else _hhmm(e.end_minute),
            "note": e.note, "created_by": e.created_by, "created_at": iso(e.created_at)}


def add_exception(actor, body):
    """A dated exception: ``leave`` (the whole day, or start-end) or an ``extra`` shift (group, start-end).

    Args:
        actor: who records it.
        body: {staff_no, date, kind: leave|extra, group?, start?, end?, note?}.
    """
    staff = _active_staff(body["staff_no"])
    day = parse_day(body["date"], "/date").isoformat()
    start = end = None
    if body.get("start") is not None or body.get("end") is not None or body["kind"] == "extra":
        if body.get("start") is None or body.get("end") is None:
            raise Problem(422, "invalid-shift", "Invalid shift", "give both start and end (an extra shift needs them)")
        [(start, end)] = _periods([[body["start"], body["end"]]], "/start")
    group = body.get("group")
    if body["kind"] == "extra":
        if not group:
            raise Problem(422, "invalid-shift", "Invalid shift", "an extra shift names its skill group")
        _check_group(staff, group)
    elif group:
        raise Problem(422, "invalid-shift", "Invalid shift", "leave applies to every group: give no group")
    with write_transaction():
        e = ServiceShiftException.create(staff_no=staff.staff_no, day=day, kind=body["kind"], group=group,
                                         start_minute=start, end_minute=end, note=body.get("note", ""),
                                         created_by=actor, created_at=clock.now())
    return exception_dict(e)


def delete_exception(exc_id):
    with write_transaction():
        n = ServiceShiftException.delete().where(ServiceShiftException.id == exc_id).execute()
    if not n:
        raise not_found("shift exception", exc_id)
    return {"deleted": True}


# --- shifts of a day ---------------------------------------------------------------------------------

def _subtract(periods, cut):
    a, b = cut
    out = []
    for s, e in periods:
        if e <= a or s >= b:
            out.append((s, e))
            continue
        if s < a:
            out.append((s, a))
        if e > b:
            out.append((b, e))
    return out


def _day_periods(cfg, day, rosters, exceptions):
    """{(staff_no, group): [(start_minute, end_minute)]} on one local date."""
    cal = cfg.calendar
    if day in cal.holidays:
        weekday = None
    elif day in cal.workdays:
        weekday = cfg.doc.get("makeup_workday_as", "mon")
    else:
        weekday = WEEKDAYS[day.weekday()]
    text = day.isoformat()
    out = {}
    for r in rosters:
        if weekday is None or r.valid_from > text or (r.valid_to is not None and r.valid_to < text):
            continue
        periods = [(_minute(a), _minute(b)) for a, b in json.loads(r.week).get(weekday) or ()]
        if periods:
            out[(r.staff_no, r.group)] = periods
    for e in exceptions:
        if e.day != text:
            continue
        if e.kind == "leave":
            for key in [k for k in out if k[0] == e.staff_no]:
                out[key] = ([] if e.start_minute is None else _subtract(out[key], (e.start_minute, e.end_minute)))
        else:
            key = (e.staff_no, e.group)
            out[key] = sorted(out.get(key, []) + [(e.start_minute, e.end_minute)])
    return {k: v for k, v in out.items() if v}


def shifts(date_from, date_to, staff_no=None, group=None, cfg=None):
    """Every shift in local dates [date_from, date_to] as UTC intervals.

    Returns:
        list of {staff_no, group, date, start, end (local HH:MM), start_at, end_at (UTC)} by date, start, staff.
    """
    cfg = cfg or current()
    rq = ServiceRoster.select()
    eq = ServiceShiftException.select().where((ServiceShiftException.day >= date_from.isoformat())
                                              & (ServiceShiftException.day <= date_to.isoformat()))
    if staff_no:
        rq = rq.where(ServiceRoster.staff_no == staff_no)
        eq = eq.where(ServiceShiftException.staff_no == staff_no)
    rosters, exceptions = list(rq), list(eq)
    out = []
    day = date_from
    while day <= date_to:
        for (who, grp), periods in _day_periods(cfg, day, rosters, exceptions).items():
            if group and grp != group:
                continue
            for a, b in periods:
                out.append({"staff_no": who, "group": grp, "date": day.isoformat(), "start": _hhmm(a),
                            "end": _hhmm(b), "start_at": _utc(cfg, day, a), "end_at": _utc(cfg, day, b)})
        day += dt.timedelta(days=1)
    out.sort(key=lambda s: (s["start_at"], s["staff_no"], s["group"]))
    return out


def shift_dict(s):
    return dict(s, start_at=iso(s["start_at"]), end_at=iso(s["end_at"]))


def on_shift(staff_nos, at, cfg=None, early_minutes=0):
    """The staff numbers (of ``staff_nos``) with a shift running at ``at`` (naive UTC)."""
    cfg = cfg or current()
    day = local_day(cfg, at)
    early = dt.timedelta(minutes=early_minutes)
    found = set()
    only = next(iter(staff_nos)) if len(staff_nos) == 1 else None
    for s in shifts(day - dt.timedelta(days=1), day + dt.timedelta(days=1), staff_no=only, cfg=cfg):
        if s["staff_no"] in staff_nos and s["start_at"] - early <= at < s["end_at"]:
            found.add(s["staff_no"])
    return found


def check_online(staff_no, now):
    """Refuse going online outside a shift when the policy says so (409 ``outside-shift``); the refusal is logged."""
    try:
        cfg = current()
    except Problem:
        return  # no workforce policy: presence is not restricted
    if cfg.doc.get("online_outside_shift", "allow") != "refuse":
        return
    early = cfg.minutes("early_online_minutes")
    if staff_no in on_shift({staff_no}, now, cfg, early_minutes=early):
        return
    from app.policy import decisions
    with write_transaction():
        decisions.record(RULESET, cfg.version, "online_outside_shift", f"service:agent:{staff_no}",
                         {"at": iso(now), "early_online_minutes": early}, {"refused": "outside-shift"})
    upcoming = [shift_dict(s) for s in shifts(local_day(cfg, now), local_day(cfg, now) + dt.timedelta(days=7),
                                              staff_no=staff_no, cfg=cfg) if s["end_at"] > now][:1]
    raise Problem(409, "outside-shift", "Outside your shift",
                  f"{staff_no} has no shift now and the workforce policy refuses going online outside a shift",
                  next_shift=upcoming[0] if upcoming else None)


# --- presence log and attendance ---------------------------------------------------------------------

def log_presence(staff_no, status, reason, at):
    """Append one presence change (call inside the transaction that changes the agent's status)."""
    ServicePresence.insert(staff_no=staff_no, status=status, reason=reason, at=at, created_at=clock.now()).execute()


def _presence_intervals(staff_no, start, end, now):
    """[(from, to, status)] of the agent between two UTC instants (from the log; open intervals end now)."""
    before = (ServicePresence.select().where((ServicePresence.staff_no == staff_no) & (ServicePresence.at < start))
              .order_by(ServicePresence.at.desc(), ServicePresence.id.desc()).first())
    rows = list(ServicePresence.select().where((ServicePresence.staff_no == staff_no) & (ServicePresence.at >= start)
                                               & (ServicePresence.at < end))
                .order_by(ServicePresence.at, ServicePresence.id))
    status, since = (before.status if before else "offline"), start
    out = []
    for r in rows:
        if r.at > since:
            out.append((since, r.at, status))
        status, since = r.status, max(since, r.at)
    stop = min(end, now)
    if stop > since:
        out.append((since, stop, status))
    return [(a, b, s) for a, b, s in out if s != "offline"]


def _minutes(delta):
    return int(delta.total_seconds() // 60)


def attendance(date_from, date_to, staff_no=None):
    """Attendance per agent per local day: late, early leave, absent, online minutes — from the presence log.

    An agent is present while online or away. Per shift: arrival is the first present instant in it (on time
    when already present at its start), departure the last; late when arrival > start + late grace, early leave
    when departure < end - early-leave grace, absent when never present in it.

    Returns:
        list of {staff_no, date, shifts: [...], shift_minutes, online_minutes, away_minutes, present_in_shift_minutes,
        late_minutes, early_leave_minutes, late, early_leave, absent, policy_version} by date, staff.
    """
    from app.services.service import desk
    desk.expire()  # timeouts due by now are in the log before it is read
    cfg = current()
    now = clock.now()
    late_grace = dt.timedelta(minutes=cfg.minutes("late_grace_minutes"))
    early_grace = dt.timedelta(minutes=cfg.minutes("early_leave_grace_minutes"))
    all_shifts = shifts(date_from, date_to, staff_no=staff_no, cfg=cfg)
    people = {s["staff_no"] for s in all_shifts}
    if staff_no:
        people.add(staff_no)
    else:
        people |= {r.staff_no for r in ServicePresence.select(ServicePresence.staff_no).where(
            (ServicePresence.at >= _utc(cfg, date_from, 0))
            & (ServicePresence.at < _utc(cfg, date_to + dt.timedelta(days=1), 0))).distinct()}
    out = []
    day = date_from
    while day <= date_to:
        start, end = _utc(cfg, day, 0), _utc(cfg, day + dt.timedelta(days=1), 0)
        for who in sorted(people):
            present = _presence_intervals(who, start, end, now)
            mine = [s for s in all_shifts if s["staff_no"] == who and s["date"] == day.isoformat()]
            if not mine and not present:
                continue
            row = {"staff_no": who, "date": day.isoformat(), "shifts": [],
                   "online_minutes": sum(_minutes(b - a) for a, b, st in present if st == "online"),
                   "away_minutes": sum(_minutes(b - a) for a, b, st in present if st == "away"),
                   "shift_minutes": 0, "present_in_shift_minutes": 0, "late_minutes": 0, "early_leave_minutes": 0,
                   "policy_version": cfg.version}
            for s in _merge_shifts(mine):
                row["shift_minutes"] += _minutes(s["end_at"] - s["start_at"])
                inside = [(max(a, s["start_at"]), min(b, s["end_at"])) for a, b, _ in present
                          if a < s["end_at"] and b > s["start_at"]]
                entry = {"groups": s["groups"], "start": s["start"], "end": s["end"], "start_at": iso(s["start_at"]),
                         "end_at": iso(s["end_at"]), "arrived_at": None, "left_at": None, "late_minutes": 0,
                         "early_leave_minutes": 0, "absent": not inside, "ongoing": s["end_at"] > now}
                if inside:
                    arrived, left = min(a for a, _ in inside), max(b for _, b in inside)
                    entry["arrived_at"], entry["left_at"] = iso(arrived), iso(left)
                    entry["present_minutes"] = sum(_minutes(b - a) for a, b in inside)
                    row["present_in_shift_minutes"] += entry["present_minutes"]
                    if arrived > s["start_at"] + late_grace:
                        entry["late_minutes"] = _minutes(arrived - s["start_at"])
                    if left < s["end_at"] - early_grace and not (s["end_at"] > now and left >= now):
                        entry["early_leave_minutes"] = _minutes(s["end_at"] - left)
                elif s["start_at"] + late_grace > now:
                    entry["absent"] = False  # not started yet (or within the grace): nothing to say
                row["late_minutes"] += entry["late_minutes"]
                row["early_leave_minutes"] += entry["early_leave_minutes"]
                row["shifts"].append(entry)
            row["late"] = row["late_minutes"] > 0
            row["early_leave"] = row["early_leave_minutes"] > 0
            row["absent"] = bool(row["shifts"]) and all(e["absent"] for e in row["shifts"])
            out.append(row)
        day += dt.timedelta(days=1)
    return out


def _merge_shifts(items):
    """One agent's shifts of one day, touching or overlapping ones merged across groups."""
    out = []
    for s in sorted(items, key=lambda s: s["start_at"]):
        if out and s["start_at"] <= out[-1]["end_at"]:
            last = out[-1]
            if s["end_at"] > last["end_at"]:
                last["end_at"], last["end"] = s["end_at"], s["end"]
            if s["group"] not in last["groups"]:
                last["groups"].append(s["group"])
            continue
        out.append({"start_at": s["start_at"], "end_at": s["end_at"], "start": s["start"], "end": s["end"],
                    "groups": [s["group"]]})
    return out


# --- capacity forecast -------------------------------------------------------------------------------

def capacity_forecast(date_from, date_to=None, group=None):
    """Rostered capacity per skill group per local hour: agent-minutes on shift and users servable at once.

    ``capacity`` of an hour is Σ over the agents on shift of (minutes on shift in that hour / 60) × the agent's
    capacity from the service policy (``capacity_by_role``/``default_capacity``).

    Args:
        date_from: first local date (datetime.date).
        date_to: last local date (default: date_from).
        group: one skill group (default: every group with a roster).

    Returns:
        {timezone, policy_version, groups: {group: [{date, hour: "HH:00", start_at, agents, agent_minutes,
        capacity}]}} — 24 rows per date and group.
    """
    from app.services.service.policy import current as service_config
    cfg, scfg = current(), service_config()
    date_to = date_to or date_from
    items = shifts(date_from, date_to, group=group, cfg=cfg)
    roles = {s.staff_no: s.role_list for s in Staff.select().where(Staff.staff_no.in_({i["staff_no"] for i in items}))}
    codes = [group] if group else sorted({i["group"] for i in items} & set(scfg.groups))
    out = {}
    for code in codes:
        rows = []
        day = date_from
        while day <= date_to:
            for hour in range(24):
                h_start, h_end = _utc(cfg, day, hour * 60), _utc(cfg, day, hour * 60 + 60)
                minutes, cap, agents = 0, 0.0, set()
                for s in items:
                    if s["group"] != code:
                        continue
                    overlap = _minutes(min(h_end, s["end_at"]) - max(h_start, s["start_at"]))
                    if overlap > 0:
                        minutes += overlap
                        agents.add(s["staff_no"])
                        cap += overlap / 60 * scfg.capacity(roles.get(s["staff_no"], []))
                rows.append({"date": day.isoformat(), "hour": f"{hour:02d}:00", "start_at": iso(h_start),
                             "agents": len(agents), "agent_minutes": minutes, "capacity": round(cap, 2)})
            day += dt.timedelta(days=1)
        out[code] = rows
    return {"timezone": cfg.calendar.timezone, "policy_version": cfg.version, "groups": out}


# --- escalation --------------------------------------------------------------------------------------

def escalation_picker(at):
    """A chooser of who receives an escalation at ``at`` (naive UTC); who is on shift is read once.

    The chooser takes ``candidates`` (the department's active staff with the escalation role, in the old
    rule's first-supervisor order) and ``loads`` (staff number -> open tickets assigned) and returns
    (staff_no or None, rule, inputs, outcome, policy_version): the least-loaded candidate on shift (ties: the
    old order); nobody on shift -> the first candidate, reason ``nobody-on-shift``; the workforce policy saying
    ``escalation: first`` or missing -> the first candidate as before.
    """
    try:
        cfg = current()
    except Problem:
        cfg = None
    mode = cfg.doc.get("escalation", "least_loaded_on_shift") if cfg else "first"
    version = cfg.version if cfg else None
    here = None

    def pick(candidates, loads):
        nonlocal here
        inputs = {"candidates": list(candidates), "loads": {c: loads.get(c, 0) for c in candidates}, "at": iso(at)}
        if not candidates:
            return None, "sla.escalation.assign_role", inputs, {"assignee": None, "reason": "no-candidate"}, version
        if mode == "least_loaded_on_shift":
            if here is None:
                day = local_day(cfg, at)
                here = {s["staff_no"] for s in shifts(day - dt.timedelta(days=1), day + dt.timedelta(days=1), cfg=cfg)
                        if s["start_at"] <= at < s["end_at"]}
            inputs["on_shift"] = sorted(set(candidates) & here)
            if inputs["on_shift"]:
                chosen = min(inputs["on_shift"], key=lambda c: (loads.get(c, 0), candidates.index(c)))
                return chosen, "workforce.escalation.least_loaded_on_shift", inputs, \
                    {"assignee": chosen, "load": loads.get(chosen, 0)}, version
            return candidates[0], "workforce.escalation.first", inputs, \
                {"assignee": candidates[0], "reason": "nobody-on-shift"}, version
        return candidates[0], "workforce.escalation.first", inputs, \
            {"assignee": candidates[0], "reason": "policy" if cfg else "no-workforce-policy"}, version

    return pick
