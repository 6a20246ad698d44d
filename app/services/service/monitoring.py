"""Real-time floor (实时监控) and alerts: per skill group and agent, computed from the clock when read.

The floor view is read-only: an agent whose heartbeats stopped counts as offline and a user who timed
out no longer counts as queued, before any sweep materialises it. Alerts compare the floor's values
with the ``monitoring`` policy's thresholds once per evaluation (the minute job) and keep one record
per episode: opened once (record + ``service.alert.opened`` webhook), updated silently while the value
stays high, recovered once (``service.alert.recovered``) when it is back under the hysteresis mark.
"""
import dataclasses
import datetime as dt
import json
import logging
import time

import peewee as pw

from app import metrics
from app.db import write_transaction
from app.errors import Problem, not_found
from app.models.policy import Decision
from app.models.service import ServiceAgent, ServiceAlert, ServiceCompensation, ServiceConversation
from app.platform import calendar as calmath, clock, outbox, paging
from app.platform.timefmt import iso
from app.services.service import tickets_port
from app.services.service.policy import current

log = logging.getLogger(__name__)

KIND = "monitoring"
AGENT_STATES = ("online", "serving", "away", "offline")
USER_GONE = ("user-timeout", "user-left", "user-disconnected")  # close reasons of a user who left
GROUP_METRICS = ("queue_length", "longest_wait_seconds", "refusal_rate_percent", "abandonment_rate_percent",
                 "sla_at_risk")
RATES = ("refusal_rate_percent", "abandonment_rate_percent")
DESK_SCOPE = "*"
DEFAULTS = {"floor": {"window_minutes": 15, "stream_refresh_seconds": 5},
            "alerts": {"recover_below_percent": 100, "min_requests": 1, "defaults": {}}}


# --- the monitoring policy ------------------------------------------------------------------------

@dataclasses.dataclass
class MonitoringConfig:
    version: str
    doc: dict

    @property
    def window(self):
        return dt.timedelta(minutes=int(self.doc["floor"]["window_minutes"]))

    @property
    def refresh_seconds(self):
        return int(self.doc["floor"]["stream_refresh_seconds"])

    @property
    def recover_percent(self):
        return int(self.doc["alerts"].get("recover_below_percent", 100))

    @property
    def min_requests(self):
        return int(self.doc["alerts"].get("min_requests", 1))

    def threshold(self, group, metric):
        """(threshold, rule) for a group's metric: the group's own value, else the default, else (None, None)."""
        alerts = self.doc["alerts"]
        own = (alerts.get("groups") or {}).get(group) or {}
        if metric in own:
            return int(own[metric]), f"alerts.groups.{group}.{metric}"
        if metric in (alerts.get("defaults") or {}):
            return int(alerts["defaults"][metric]), f"alerts.defaults.{metric}"
        return None, None


def settings():
    """The MonitoringConfig of the active policy set (built-in defaults and no thresholds without a file)."""
    from app import policy
    return policy.derived(KIND, _build)


def _build(ps):
    docs = ps.get(KIND)
    return MonitoringConfig(version=ps.version, doc=docs[0] if docs else DEFAULTS)


def cross_check(ps):
    """Errors in the monitoring policy against the set: one file at most; every group it names is a skill group."""
    docs = ps.get(KIND)
    if not docs:
        return []
    errors = [f"{d.get('_file', 'policies/monitoring.yaml')}: $: a second monitoring policy (one per set)"
              for d in docs[1:]]
    doc = docs[0]
    f = doc.get("_file", "policies/monitoring.yaml")
    service = ps.get("service")
    groups = set((service[0].get("groups") or {}) if service else ())
    for code in ((doc.get("alerts") or {}).get("groups") or {}):
        if code not in groups:
            errors.append(f"{f}: $.alerts.groups.{code}: unknown skill group {code!r} (not in the service policy)")
    return errors


def register():
    from app.policy import kinds
    kinds.register(KIND, cross_check=cross_check)


# --- the floor ------------------------------------------------------------------------------------

def _pct(part, whole):
    return round(100.0 * part / whole, 1) if whole else 0.0


def agent_state(a, cfg, now):
    """``offline`` (also when heartbeats stopped or the stream closed past the grace), ``away``, ``serving``
    (online with at least one user) or ``online`` (idle)."""
    if a.status == "offline" or a.heartbeat_at is None:
        return "offline"
    deadline = a.heartbeat_at + cfg.agent_timeout
    if a.left_at is not None:
        deadline = min(deadline, a.left_at + cfg.grace)
    if deadline <= now:
        return "offline"
    if a.status == "away":
        return "away"
    return "serving" if a.serving > 0 else "online"


def _recent_refusals(groups, since, now):
    """Refusals by each group's queue cap in [since, now] (the decision log's ``groups.<g>.queue_cap`` rows)."""
    rules = {f"groups.{g}.queue_cap": g for g in groups}
    rows = (Decision.select(Decision.rule, pw.fn.COUNT(Decision.id))
            .where((Decision.ruleset == "service") & Decision.rule.in_(list(rules))
                   & (Decision.created_at >= since) & (Decision.created_at <= now))
            .group_by(Decision.rule).tuples())
    return {rules[rule]: int(n) for rule, n in rows}


def floor_view(now=None):
    """The floor now: per skill group and per agent.

    Returns:
        {at, policy_version, monitoring_version, window_minutes, business_date, groups: [...], agents: [...]}:
        a group has queue_length, longest/average_wait_seconds, agents by state (online, serving, away,
        offline), serving (users being served), refused_recent / requests_recent / refusal_rate_percent,
        abandoned_recent / abandonment_rate_percent (over the window), sla_at_risk, sla_breached; an agent
        has state, groups, serving_count, capacity, current_conversation, conversations, handled_today.
    """
    cfg, mon = current(), settings()
    now = now or clock.now()
    since = now - mon.window
    today = calmath.local_date(cfg.calendar, now)
    day_start = calmath.day_start(cfg.calendar, today)
    codes = list(cfg.groups)
    C = ServiceConversation
    present = ((C.user_seen_at >= now - cfg.user_timeout)
               & (C.user_left_at.is_null() | (C.user_left_at >= now - cfg.grace)))
    waits = {g: [] for g in codes}
    for group, queued_at in (C.select(C.group, C.queued_at)
                             .where((C.state == "queued") & present & (C.queued_at <= now)).tuples()):
        if group in waits:
            waits[group].append(max(0, int((now - queued_at).total_seconds())))
    serving = {g: [] for g in codes}
    for cid, group, agent in (C.select(C.id, C.group, C.agent).where(C.state == "serving")
                              .order_by(C.assigned_at, C.id).tuples()):
        serving.setdefault(group, []).append((cid, agent))
    requests = dict(C.select(C.group, pw.fn.COUNT(C.id))
                    .where(C.queued_at.is_null(False) & (C.queued_at >= since) & (C.queued_at <= now))
                    .group_by(C.group).tuples())
    abandoned = dict(C.select(C.group, pw.fn.COUNT(C.id))
                     .where((C.state == "closed") & C.close_reason.in_(USER_GONE) & C.agent.is_null()
                            & C.queued_at.is_null(False) & (C.closed_at >= since) & (C.closed_at <= now))
                     .group_by(C.group).tuples())
    refused = _recent_refusals(codes, since, now)
    agents = list(ServiceAgent.select().order_by(ServiceAgent.staff_no))
    states = {a.staff_no: agent_state(a, cfg, now) for a in agents}
    handled = dict(C.select(C.closed_by, pw.fn.COUNT(C.id))
                   .where((C.close_reason == "resolved") & (C.closed_at >= day_start) & (C.closed_at <= now))
                   .group_by(C.closed_by).tuples())
    mine = {}
    for group_rows in serving.values():
        for cid, agent in group_rows:
            mine.setdefault(agent, []).append(cid)

    groups = []
    for code in codes:
        g = cfg.groups[code]
        w = waits[code]
        members = [a for a in agents if f" {code} " in a.groups]
        by_state = {s: sum(1 for a in members if states[a.staff_no] == s) for s in AGENT_STATES}
        n_req, n_ref = int(requests.get(code, 0)), refused.get(code, 0)
        risk = tickets_port.sla_risk(C.select(C.ticket_id).where((C.group == code) & C.ticket_id.is_null(False)
                                                                 & (C.created_at <= now)), now)
        groups.append({
            "group": code, "name": g["name"], "queue_cap": g["queue_cap"], "queue_length": len(w),
            "longest_wait_seconds": max(w) if w else 0,
            "average_wait_seconds": round(sum(w) / len(w), 1) if w else 0.0,
            "agents": by_state, "serving": len(serving.get(code, ())),
            "agents_locked": sum(1 for a in members if states[a.staff_no] != "offline" and a.serving >= a.capacity),
            "refused_recent": n_ref, "requests_recent": n_req + n_ref,
            "refusal_rate_percent": _pct(n_ref, n_req + n_ref),
            "abandoned_recent": int(abandoned.get(code, 0)),
            "abandonment_rate_percent": _pct(int(abandoned.get(code, 0)), n_req),
            "sla_at_risk": risk["at_risk"], "sla_breached": risk["breached"]})
    agent_rows = []
    for a in agents:
        convs = mine.get(a.staff_no, []) if states[a.staff_no] != "offline" else []
        agent_rows.append({"staff_no": a.staff_no, "state": states[a.staff_no], "groups": a.groups.split(),
                           "capacity": a.capacity, "serving_count": len(convs),
                           "current_conversation": convs[0] if convs else None, "conversations": convs,
                           "handled_today": int(handled.get(a.staff_no, 0)),
                           "heartbeat_at": iso(a.heartbeat_at)})
    return {"at": iso(now), "policy_version": cfg.version, "monitoring_version": mon.version,
            "assignment": cfg.assignment, "window_minutes": int(mon.window.total_seconds() // 60),
            "business_date": today.isoformat(), "groups": groups, "agents": agent_rows}


def export_gauges(view):
    """Set the Prometheus gauges (queue length, longest wait, agents by state per group) from a floor view."""
    for g in view["groups"]:
        metrics.SERVICE_QUEUE_LENGTH.labels(g["group"]).set(g["queue_length"])
        metrics.SERVICE_LONGEST_WAIT.labels(g["group"]).set(g["longest_wait_seconds"])
        for state, n in g["agents"].items():
            metrics.SERVICE_AGENTS.labels(g["group"], state).set(n)


def floor(now=None):
    """The floor view (GET /v1/service/floor); the gauges follow every read."""
    view = floor_view(now)
    export_gauges(view)
    return view


def floor_frames(view_fn, wait, refresh_seconds, coalesce_seconds=1.0):
    """SSE frames of the floor: one now, then one whenever a desk event (or ``refresh_seconds``) changes it.

    A burst of desk events is coalesced: the floor is recomputed at most once per ``coalesce_seconds``.
    """
    last, n, computed = None, 0, 0.0
    yield "retry: 2000\n\n"
    while True:
        gap = computed + coalesce_seconds - time.monotonic()
        if gap > 0:
            time.sleep(gap)
        computed = time.monotonic()
        view = view_fn()
        body = {k: v for k, v in view.items() if k != "at"}
        if body != last:
            last, n = body, n + 1
            yield f"id: {n}\nevent: floor\ndata: {json.dumps(view, ensure_ascii=False, separators=(',', ':'))}\n\n"
        if not wait(refresh_seconds):
            yield ": keep-alive\n\n"


# --- alerts ---------------------------------------------------------------------------------------

def compensation_today(cfg, now):
    """Red packets paid today (business day of the service calendar), in fen, the whole desk."""
    start = calmath.day_start(cfg.calendar, calmath.local_date(cfg.calendar, now))
    S = ServiceCompensation
    paid_at = pw.fn.COALESCE(S.decided_at, S.created_at)
    total = (S.select(pw.fn.SUM(S.amount_fen)).where((S.state == "paid") & (paid_at >= start) & (paid_at <= now))
             .scalar())
    return int(total or 0)


def _measurements(view, cfg, mon, now):
    """(metric, scope, value, threshold, rule) for every threshold the policy sets."""
    out = []
    for g in view["groups"]:
        for metric in GROUP_METRICS:
            threshold, rule = mon.threshold(g["group"], metric)
            if threshold is None:
                continue
            value = g[metric]
            if metric in RATES:
                base = g["requests_recent"] if metric == "refusal_rate_percent" else \
                    g["requests_recent"] - g["refused_recent"]
                value = int(value) if base >= mon.min_requests else 0  # too few requests: no rate to speak of
            out.append((metric, g["group"], int(value), threshold, rule))
    limit = mon.doc["alerts"].get("compensation_spend_today_fen")
    if limit is not None:
        out.append(("compensation_spend_today_fen", DESK_SCOPE, compensation_today(cfg, now), int(limit),
                    "alerts.compensation_spend_today_fen"))
    return out


def alert_dict(a):
    return {"id": a.id, "rule": a.rule, "metric": a.metric, "scope": a.scope, "state": a.state,
            "threshold": a.threshold, "value": a.value, "peak": a.peak, "last_value": a.last_value,
            "policy_version": a.policy_version, "opened_at": iso(a.opened_at), "evaluated_at": iso(a.evaluated_at),
            "recovered_at": iso(a.recovered_at), "acknowledged_by": a.acknowledged_by,
            "acknowledged_at": iso(a.acknowledged_at), "acknowledge_note": a.acknowledge_note}


def _open(metric, scope, value, threshold, rule, version, now):
    from app.policy import decisions
    try:
        with write_transaction():
            a = ServiceAlert.create(rule=rule, metric=metric, scope=scope, state="open", threshold=threshold,
                                    value=value, peak=value, last_value=value, policy_version=version,
                                    opened_at=now, evaluated_at=now)
            decisions.record(KIND, version, rule, f"service:alert:{a.id}",
                             {"metric": metric, "scope": scope, "value": value, "threshold": threshold},
                             {"alert": "opened"})
            outbox.publish("service.alert.opened", alert_dict(a), subject=f"service:alert:{a.id}",
                           dedupe_key=f"service.alert:{a.id}:opened")
        return a
    except pw.IntegrityError:  # another evaluator opened this episode at the same moment
        return None


def _recover(a, value, version, now, why):
    from app.policy import decisions
    with write_transaction():
        n = (ServiceAlert.update(state="recovered", recovered_at=now, evaluated_at=now, last_value=value)
             .where((ServiceAlert.id == a.id) & (ServiceAlert.state == "open")).execute())
        if not n:
            return None  # another evaluator recovered it
        a = ServiceAlert.get_by_id(a.id)
        decisions.record(KIND, version, a.rule, f"service:alert:{a.id}",
                         {"metric": a.metric, "scope": a.scope, "value": value, "threshold": a.threshold},
                         {"alert": "recovered", "why": why})
        outbox.publish("service.alert.recovered", dict(alert_dict(a), why=why), subject=f"service:alert:{a.id}",
                       dedupe_key=f"service.alert:{a.id}:recovered")
    return a


def evaluate(now=None):
    """Compare the floor with the monitoring thresholds; open, update or recover alert episodes.

    An episode opens when a value reaches its threshold (once: one open alert per metric and scope), and
    recovers when the value is at most ``recover_below_percent`` of the threshold, or the threshold is gone.

    Returns:
        {"opened": [alert], "recovered": [alert], "open": n, "floor": the floor view the values came from}.
    """
    cfg, mon = current(), settings()
    now = now or clock.now()
    view = floor_view(now)
    export_gauges(view)
    current_open = {(a.metric, a.scope): a for a in ServiceAlert.select().where(ServiceAlert.state == "open")}
    opened, recovered, seen = [], [], set()
    for metric, scope, value, threshold, rule in _measurements(view, cfg, mon, now):
        seen.add((metric, scope))
        a = current_open.get((metric, scope))
        if a is None:
            if value >= threshold:
                a = _open(metric, scope, value, threshold, rule, mon.version, now)
                if a is not None:
                    opened.append(alert_dict(a))
            continue
        if value * 100 <= a.threshold * mon.recover_percent and value < threshold:
            done = _recover(a, value, mon.version, now, "below-threshold")
            if done is not None:
                recovered.append(alert_dict(done))
        else:
            ServiceAlert.update(last_value=value, peak=max(a.peak, value), evaluated_at=now) \
                .where((ServiceAlert.id == a.id) & (ServiceAlert.state == "open")).execute()
    for key, a in current_open.items():
        if key not in seen:  # the policy no longer sets this threshold
            done = _recover(a, a.last_value, mon.version, now, "threshold-removed")
            if done is not None:
                recovered.append(alert_dict(done))
    n_open = ServiceAlert.select().where(ServiceAlert.state == "open").count()
    return {"opened": opened, "recovered": recovered, "open": n_open, "floor": view}


def list_alerts(state=None, limit=100, before=None):
    """Alerts, newest first (``state``: open | recovered; ``before``: an id cursor)."""
    q = ServiceAlert.select()
    if state:
        q = q.where(ServiceAlert.state == state)
    rows, nxt = paging.keyset(q, ServiceAlert.id, before or None, limit)
    return {"items": [alert_dict(a) for a in rows], "next_cursor": nxt}


def get_alert(alert_id):
    a = ServiceAlert.get_or_none(ServiceAlert.id == alert_id)
    if a is None:
        raise not_found("alert", alert_id)
    return a


def acknowledge(staff_no, alert_id, note=None):
    """A supervisor acknowledges an alert (once; it keeps its state: acknowledging does not recover it)."""
    now = clock.now()
    with write_transaction():
        a = get_alert(alert_id)
        n = (ServiceAlert.update(acknowledged_by=staff_no, acknowledged_at=now, acknowledge_note=note or "")
             .where((ServiceAlert.id == alert_id) & ServiceAlert.acknowledged_at.is_null()).execute())
        if not n:
            raise Problem(409, "alert-acknowledged", "Already acknowledged",
                          f"alert {alert_id} was acknowledged by {a.acknowledged_by}")
    return alert_dict(get_alert(alert_id))
