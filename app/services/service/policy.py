"""Service policy view: skill groups, caps, capacity, timeouts and business hours; the service cross-check."""
import datetime as dt
from dataclasses import dataclass

from app.errors import Problem
from app.platform import calendar as calmath

PRIORITY, REVIEW = "service_priority", "service_review"


@dataclass
class ServiceConfig:
    version: str
    doc: dict
    calendar: object

    @property
    def groups(self):
        return self.doc["groups"]

    def group(self, code):
        g = self.groups.get(code)
        if g is None:
            raise Problem(422, "unknown-group", "Unknown skill group", f"no skill group {code!r}",
                          allowed=sorted(self.groups))
        return g

    def seconds(self, name, default):
        return int(self.doc.get(name, default))

    @property
    def agent_timeout(self):
        return dt.timedelta(seconds=self.seconds("agent_timeout_seconds", 30))

    @property
    def user_timeout(self):
        return dt.timedelta(seconds=self.seconds("user_timeout_seconds", 120))

    @property
    def grace(self):
        return dt.timedelta(seconds=self.seconds("reconnect_grace_seconds", 15))

    @property
    def assignment(self):
        return self.doc.get("assignment", "auto")

    def capacity(self, roles):
        by_role = self.doc.get("capacity_by_role") or {}
        caps = [by_role[r] for r in roles if r in by_role]
        return max(caps) if caps else int(self.doc.get("default_capacity", 1))

    def groups_for(self, roles):
        return [code for code, g in self.groups.items() if set(g["roles"]) & set(roles)]

    def is_open(self, at):
        return calmath.is_open(self.calendar, at)


def current():
    """The ServiceConfig of the active policy set (compiled once per version)."""
    from app import policy
    return policy.derived("service", build)


def with_calendar(ps, kind):
    """(document, Calendar) of the single policy of ``kind`` and the calendar it names (503 ``policy-missing``)."""
    try:
        doc = ps.one(kind)
        cal_doc = ps.one("calendar")
    except KeyError:
        raise Problem(503, "policy-missing", "Policy missing",
                      f"the active policy set has no single {kind!r} or 'calendar' policy") from None
    return doc, calmath.calendar_from_policy(cal_doc["calendars"][doc["calendar"]])


def build(ps):
    doc, calendar = with_calendar(ps, "service")
    return ServiceConfig(version=ps.version, doc=doc, calendar=calendar)


def _first(ps, kind):
    docs = ps.get(kind)
    return docs[0] if docs else None


def cross_check(ps):
    """Errors in the service policy against the rest of the set, all at once.

    Checks: the calendar exists; every group's department and roles exist in the staff policy; every
    ticket category exists; every queue a service benefit (membership) names is a skill group; every
    group a priority rule routes to exists.
    """
    doc = _first(ps, "service")
    if doc is None:
        return []
    f = doc.get("_file", "policies/service.yaml")
    errors = []
    cal = _first(ps, "calendar")
    if cal is not None and doc.get("calendar") not in (cal.get("calendars") or {}):
        errors.append(f"{f}: $.calendar: unknown calendar {doc.get('calendar')!r}")
    staff = _first(ps, "staff")
    tickets = _first(ps, "tickets")
    groups = doc.get("groups") or {}
    if staff is not None:
        roles, depts = set(staff.get("roles") or {}), set(staff.get("departments") or {})
        for code, g in groups.items():
            if g.get("department") not in depts:
                errors.append(f"{f}: $.groups.{code}.department: unknown department {g.get('department')!r}")
            for i, r in enumerate(g.get("roles") or ()):
                if r not in roles:
                    errors.append(f"{f}: $.groups.{code}.roles[{i}]: unknown role {r!r}")
        for r in doc.get("capacity_by_role") or {}:
            if r not in roles:
                errors.append(f"{f}: $.capacity_by_role.{r}: unknown role {r!r}")
        for section in ("limit_fen_by_role", "daily_budget_fen_by_role"):
            for r in (doc.get("compensation") or {}).get(section) or {}:
                if r not in roles:
                    errors.append(f"{f}: $.compensation.{section}.{r}: unknown role {r!r}")
    if tickets is not None:
        cats = tickets.get("categories") or {}
        for code, g in groups.items():
            if g.get("ticket_category") is not None and g["ticket_category"] not in cats:
                errors.append(f"{f}: $.groups.{code}.ticket_category: unknown ticket category "
                              f"{g['ticket_category']!r}")
    benefits = _first(ps, "benefits")
    if benefits is not None:
        bf = benefits.get("_file", "policies/benefits.yaml")
        for i, item in enumerate(benefits.get("catalogue") or ()):
            if isinstance(item, dict) and item.get("type") == "service" and item.get("queue") is not None \
                    and item["queue"] not in groups:
                errors.append(f"{bf}: $.catalogue[{i}].queue: service benefit {item.get('name')!r} names queue "
                              f"{item['queue']!r}, which is not a skill group of the service policy")
    for rs in ps.get("ruleset"):
        if rs.get("name") not in (PRIORITY, REVIEW):
            continue
        for i, rule in enumerate(rs.get("rules") or ()):
            for j, act in enumerate((rule or {}).get("then") or ()):
                if act.get("action") == "route_to_group" and act.get("group") not in groups:
                    errors.append(f"{rs['_file']}: $.rules[{i}].then[{j}].group: unknown skill group "
                                  f"{act.get('group')!r}")
                if act.get("action") == "open_complaint" and tickets is not None \
                        and act.get("category") not in (tickets.get("categories") or {}):
                    errors.append(f"{rs['_file']}: $.rules[{i}].then[{j}].category: unknown ticket category "
                                  f"{act.get('category')!r}")
    return errors


ACTION_SCHEMAS = {
    "set_queue_priority": {"type": "object", "required": ["priority"], "additionalProperties": False,
                           "properties": {"priority": {"type": "integer", "minimum": 0, "maximum": 1000}}},
    "route_to_group": {"type": "object", "required": ["group"], "additionalProperties": False,
                       "properties": {"group": {"type": "string", "minLength": 1, "maxLength": 64}}},
    "route_to_benefit_queue": {"type": "object", "additionalProperties": False, "properties": {}},
    "open_complaint": {"type": "object", "required": ["category"], "additionalProperties": False,
                       "properties": {"category": {"type": "string", "minLength": 1, "maxLength": 64}}},
}


def register():
    from app.engine import actions
    from app.policy import kinds
    for name, schema in ACTION_SCHEMAS.items():
        actions.register(name, schema)
    kinds.register("service", cross_check=cross_check)
    kinds.require("service", "calendar", "staff", "tickets", rulesets=(PRIORITY, REVIEW))
