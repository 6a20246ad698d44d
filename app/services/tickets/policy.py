"""Ticket policy view: workflows, SLA targets, calendars, roles from the active policy set; guards; cross-checks."""
import json
from dataclasses import dataclass, field

from app.engine import lang
from app.errors import Problem
from app.platform import calendar as slamath

PRIORITIES = ("P1", "P2", "P3", "P4")


@dataclass
class TicketConfig:
    version: str
    tickets: dict
    sla: dict
    calendars: dict  # name -> slamath.Calendar
    staff: dict
    _sla_targets: dict = field(default_factory=dict, repr=False, compare=False)

    def category(self, name):
        cat = self.tickets["categories"].get(name)
        if cat is None:
            raise Problem(422, "unknown-category", "Unknown category",
                          f"category {name!r} is not in the tickets policy",
                          allowed=sorted(self.tickets["categories"]))
        return cat

    def workflow(self, name):
        wf = self.tickets["workflows"].get(name)
        if wf is None:
            # a ticket opened under an older policy whose workflow has since been removed
            raise Problem(409, "workflow-missing", "Workflow missing",
                          f"workflow {name!r} is not in the active tickets policy {self.version}")
        return wf

    def state(self, workflow, state):
        wf = self.tickets["workflows"].get(workflow) or {}
        return (wf.get("states") or {}).get(state) or {}

    def transitions_from(self, workflow, state):
        return [t for t in self.workflow(workflow)["transitions"] if state in t["from"]]

    def roles(self):
        return set((self.staff.get("roles") or {}))

    def departments(self):
        return self.staff.get("departments") or {}

    def sla_target(self, category, priority):
        """(calendar name, {first_response, next_response, resolution} in minutes) for a ticket.

        Derived once per (category, priority) and policy version: the config is rebuilt on a new version.
        """
        key = (category, priority)
        hit = self._sla_targets.get(key)
        if hit is None:
            hit = self._sla_targets[key] = self._sla_target(category, priority)
        return hit[0], dict(hit[1])

    def _sla_target(self, category, priority):
        base = dict(self.sla["targets"][priority])
        for ov in self.sla.get("overrides") or ():
            if ov["category"] == category and (not ov.get("priorities") or priority in ov["priorities"]):
                base.update({k: v for k, v in ov.items() if k not in ("category", "priorities")})
        cal = base.get("calendar") or self.sla["calendar"]
        return cal, {"first_response": base["first_response_minutes"],
                     "next_response": base["next_response_minutes"],
                     "resolution": base["resolution_minutes"]}

    def calendar(self, name):
        return self.calendars[name]


def current():
    """The TicketConfig of the active policy set (compiled once per version)."""
    from app import policy
    return policy.derived("tickets", build)


def _one(ps, kind):
    try:
        return ps.one(kind)
    except KeyError:
        raise Problem(503, "policy-missing", "Policy missing",
                      f"the active policy set has no single {kind!r} policy") from None


def build(ps):
    """Compile a policy set's ticket-related documents into a TicketConfig."""
    cal_doc = _one(ps, "calendar")
    calendars = {name: slamath.calendar_from_policy(doc) for name, doc in cal_doc["calendars"].items()}
    return TicketConfig(version=ps.version, tickets=_one(ps, "tickets"), sla=_one(ps, "sla"),
                        calendars=calendars, staff=_one(ps, "staff"))


# --- guards: the ruleset condition language (app.engine.lang), compiled once per condition ---------

_guards = {}


def matches(cond, facts):
    """True when ``cond`` holds over ``facts``, with the rulesets' semantics (``app.engine.lang``)."""
    key = json.dumps(cond, sort_keys=True)
    pred = _guards.get(key)
    if pred is None:
        if len(_guards) > 1024:  # guards come from policy files: few; never grow without limit
            _guards.clear()
        pred = _guards[key] = lang.compile_condition(cond)
    return pred(facts)


# --- cross-checks ---------------------------------------------------------------------------------

def _docs(ps, kind):
    try:
        return ps.get(kind)
    except Exception:  # noqa: BLE001 - a set without the kind simply has nothing to check
        return []


def cross_check(ps):
    """Errors (strings) in the ticket-related policies of a policy set, all at once.

    Checks: categories name existing workflows; every state is reachable from the initial one;
    every non-terminal state has a way out and can reach a terminal state; transitions name
    existing states and roles; auto actions name existing roles/departments; SLA calendars and
    categories exist; routing targets (department/queue) exist; priorities are P1..P4.
    """
    errors = []
    tickets = (_docs(ps, "tickets") or [None])[0]
    staff = (_docs(ps, "staff") or [None])[0]
    sla = (_docs(ps, "sla") or [None])[0]
    cal = (_docs(ps, "calendar") or [None])[0]
    assets = (_docs(ps, "ledger") or [None])[0]
    if tickets is None:
        return errors
    tf = tickets.get("_file", "policies/tickets.yaml")
    for kind, doc in (("staff", staff), ("sla", sla), ("calendar", cal)):
        if doc is None:
            errors.append(f"{tf}: $: the tickets policy needs a {kind!r} policy in the same set")
    roles = set((staff or {}).get("roles") or {})
    departments = (staff or {}).get("departments") or {}
    workflows = tickets.get("workflows") or {}
    for cname, cat in (tickets.get("categories") or {}).items():
        if cat.get("workflow") not in workflows:
            errors.append(f"{tf}: $.categories.{cname}.workflow: unknown workflow {cat.get('workflow')!r}")
    for wname, wf in workflows.items():
        errors.extend(_check_workflow(tf, wname, wf, roles, departments, staff is not None, assets))
    if sla is not None:
        sf = sla.get("_file", "policies/sla.yaml")
        names = set(((cal or {}).get("calendars") or {}))
        used = [("$.calendar", sla.get("calendar"))]
        used += [(f"$.targets.{p}.calendar", t.get("calendar")) for p, t in (sla.get("targets") or {}).items()]
        used += [(f"$.overrides[{i}].calendar", o.get("calendar")) for i, o in enumerate(sla.get("overrides") or [])]
        for path, name in used:
            if name is not None and cal is not None and name not in names:
                errors.append(f"{sf}: {path}: unknown calendar {name!r}")
        for i, o in enumerate(sla.get("overrides") or []):
            if o.get("category") not in (tickets.get("categories") or {}):
                errors.append(f"{sf}: $.overrides[{i}].category: unknown category {o.get('category')!r}")
        role = (sla.get("escalation") or {}).get("assign_role")
        if role and staff is not None and role not in roles:
            errors.append(f"{sf}: $.escalation.assign_role: unknown role {role!r}")
    if cal is not None:
        for name, doc in (cal.get("calendars") or {}).items():
            try:
                c = slamath.calendar_from_policy(doc)
                c.tz  # noqa: B018 - resolves the zone name
                if not c.always_open and not any(c.week) and not c.workdays:
                    errors.append(f"{cal.get('_file')}: $.calendars.{name}: no open period in the week")
            except Exception as exc:  # noqa: BLE001 - report, never crash the check
                errors.append(f"{cal.get('_file')}: $.calendars.{name}: {exc}")
    for rs in _docs(ps, "ruleset"):
        if rs.get("name") not in ("ticket_routing", "ticket_priority"):
            continue
        rf = rs.get("_file", "rules")
        for i, rule in enumerate(rs.get("rules") or []):
            for j, act in enumerate(rule.get("then") or []):
                path = f"{rf}: $.rules[{i}].then[{j}]"
                if act.get("action") == "route_to" and staff is not None:
                    dept = departments.get(act.get("department"))
                    if dept is None:
                        errors.append(f"{path}.department: unknown department {act.get('department')!r}")
                    elif act.get("queue") is not None and act["queue"] not in dept.get("queues", ()):
                        errors.append(f"{path}.queue: department {act.get('department')!r} has no queue "
                                      f"{act['queue']!r}")
                if act.get("action") == "set_priority" and act.get("priority") not in PRIORITIES:
                    errors.append(f"{path}.priority: {act.get('priority')!r} is not one of {list(PRIORITIES)}")
    return errors


def _check_workflow(tf, wname, wf, roles, departments, have_staff, assets=None):
    errors = []
    base = f"{tf}: $.workflows.{wname}"
    states = wf.get("states") or {}
    if wf.get("initial") not in states:
        errors.append(f"{base}.initial: unknown state {wf.get('initial')!r}")
    edges = {s: set() for s in states}
    seen_names = set()
    for i, t in enumerate(wf.get("transitions") or []):
        tp = f"{base}.transitions[{i}]"
        if t.get("name") in seen_names:
            errors.append(f"{tp}.name: duplicate transition name {t.get('name')!r}")
        seen_names.add(t.get("name"))
        if t.get("to") not in states:
            errors.append(f"{tp}.to: unknown state {t.get('to')!r}")
        for s in t.get("from") or []:
            if s not in states:
                errors.append(f"{tp}.from: unknown state {s!r}")
            elif (states[s] or {}).get("terminal"):
                errors.append(f"{tp}.from: {s!r} is terminal; nothing leaves a terminal state")
            elif t.get("to") in states:
                edges[s].add(t["to"])
        for r in t.get("roles") or []:
            if have_staff and r not in roles:
                errors.append(f"{tp}.roles: unknown role {r!r}")
    for sname, st in states.items():
        for j, act in enumerate((st or {}).get("on_enter") or []):
            ap = f"{base}.states.{sname}.on_enter[{j}]"
            if act.get("role") and have_staff and act["role"] not in roles:
                errors.append(f"{ap}.role: unknown role {act['role']!r}")
            if act.get("department") and have_staff and act["department"] not in departments:
                errors.append(f"{ap}.department: unknown department {act['department']!r}")
            if act.get("action") == "compensate" and assets is not None:
                if act.get("asset") not in (assets.get("assets") or {}):
                    errors.append(f"{ap}.asset: unknown asset {act.get('asset')!r}")
                elif not (assets["assets"][act["asset"]] or {}).get("lots"):
                    errors.append(f"{ap}.asset: {act['asset']!r} is not held in lots (compensation grants a lot)")
    if wf.get("initial") in states:
        reach, todo = {wf["initial"]}, [wf["initial"]]
        while todo:
            for nxt in edges.get(todo.pop(), ()):
                if nxt not in reach:
                    reach.add(nxt)
                    todo.append(nxt)
        for sname in states:
            if sname not in reach:
                errors.append(f"{base}.states.{sname}: unreachable from {wf['initial']!r}")
    terminals = {s for s, st in states.items() if (st or {}).get("terminal")}
    if not terminals:
        errors.append(f"{base}.states: no terminal state")
    for sname, st in states.items():
        if (st or {}).get("terminal"):
            continue
        if not edges.get(sname):
            errors.append(f"{base}.states.{sname}: non-terminal state has no way out")
            continue
        reach, todo = {sname}, [sname]
        while todo:
            for nxt in edges.get(todo.pop(), ()):
                if nxt not in reach:
                    reach.add(nxt)
                    todo.append(nxt)
        if terminals and not reach & terminals:
            errors.append(f"{base}.states.{sname}: no terminal state can be reached from here")
    return errors
