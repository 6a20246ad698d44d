"""Ticket routing and priority through the rules engine (rulesets ticket_routing, ticket_priority)."""
import logging

from app.errors import Problem

log = logging.getLogger(__name__)

ROUTING, PRIORITY = "ticket_routing", "ticket_priority"

# Parameters of the named actions ticket rulesets may use (the engine's whitelist checks them).
ACTION_SCHEMAS = {
    "route_to": {"type": "object", "required": ["department"], "additionalProperties": False,
                 "properties": {"department": {"type": "string", "minLength": 1},
                                "queue": {"type": "string", "minLength": 1}}},
    "set_priority": {"type": "object", "required": ["priority"], "additionalProperties": False,
                     "properties": {"priority": {"enum": ["P1", "P2", "P3", "P4"]}}},
    "add_tag": {"type": "object", "required": ["tag"], "additionalProperties": False,
                "properties": {"tag": {"type": "string", "minLength": 1, "maxLength": 64}}},
    "escalate": {"type": "object", "additionalProperties": False,
                 "properties": {"levels": {"type": "integer", "minimum": 1, "maximum": 3},
                                "department": {"type": "string"}}},
    "notify": {"type": "object", "additionalProperties": False,
               "properties": {"to": {"type": "array", "items": {"enum": ["user", "department", "assignee"]}},
                              "text": {"type": "string"}}},
}


def register_actions():
    """Register the ticket actions with the engine's whitelist (idempotent: same name, same schema)."""
    from app.engine import actions
    for name, schema in ACTION_SCHEMAS.items():
        actions.register(name, schema)
    return True


def register_cross_check():
    """Register the tickets cross-check and the kinds/rulesets tickets cannot run without."""
    from app.policy import kinds
    from app.services.tickets.policy import cross_check
    kinds.register("tickets", cross_check=cross_check)
    kinds.require("tickets", "staff", "sla", "calendar", rulesets=(ROUTING, PRIORITY))
    return True


def _evaluate(ruleset, facts):
    try:
        from app import engine
    except ImportError:
        raise Problem(503, "engine-unavailable", "Rules engine unavailable",
                      "the rules engine is not installed in this build") from None
    if not hasattr(engine, "evaluate"):
        raise Problem(503, "engine-unavailable", "Rules engine unavailable",
                      "the rules engine is not installed in this build")
    return engine.evaluate(ruleset, facts)


def _match_dict(ev):
    m = ev.first
    if m is None:
        return None
    return {"rule": m.rule, "priority": m.priority, "actions": list(m.actions)}


def decide(facts, default_priority):
    """Route and prioritise a ticket.

    Args:
        facts: the ticket facts (category, title, body, text, channel, amount_fen, user{level,paid}, ...).
        default_priority: priority when no priority rule matches.

    Returns:
        dict with department, queue, priority, tags, notify (list of notify actions), escalate (levels),
        and ``decisions``: [(ruleset, version, rule, actions)] for the decision log.
    """
    out = {"department": None, "queue": None, "priority": default_priority, "tags": [], "notify": [],
           "escalate": 0, "decisions": []}
    for ruleset in (ROUTING, PRIORITY):
        ev = _evaluate(ruleset, facts)
        match = _match_dict(ev)
        out["decisions"].append((ruleset, ev.version, match["rule"] if match else None,
                                 match["actions"] if match else []))
        for act in (match or {}).get("actions", []):
            name = act.get("action")
            if name == "route_to" and ruleset == ROUTING:
                out["department"], out["queue"] = act["department"], act.get("queue")
            elif name == "set_priority":
                out["priority"] = act["priority"]
            elif name == "add_tag" and act["tag"] not in out["tags"]:
                out["tags"].append(act["tag"])
            elif name == "notify":
                out["notify"].append(act)
            elif name == "escalate":
                out["escalate"] += int(act.get("levels", 1))
                if act.get("department"):
                    out["department"] = act["department"]
        out[f"{ruleset}_rule"] = match["rule"] if match else None
        out[f"{ruleset}_version"] = ev.version
    return out


def log_decision(ruleset, version, rule, subject, inputs, outcome):
    """Record a decision in the shared decision log when it exists (the ticket history has it anyway)."""
    try:
        from app.policy import decisions
    except ImportError:
        return False
    decisions.record(ruleset, version, rule, subject, inputs, outcome)
    return True
