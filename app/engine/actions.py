"""Action whitelist: rulesets may only name registered actions; each has a JSON Schema for its parameters."""
import json

from jsonschema import Draft202012Validator

_actions = {}  # name -> (schema, validator, builtin)

# Generic actions any ruleset may use; contexts add their own (route_to, award_points, ...).
BUILTIN = {
    "reject": {"type": "object", "required": ["reason"], "additionalProperties": False,
               "properties": {"reason": {"type": "string", "minLength": 1, "maxLength": 200},
                              "code": {"type": "string", "pattern": "^[a-z][a-z0-9-]*$"}}},
    "require_review": {"type": "object", "additionalProperties": False,
                       "properties": {"queue": {"type": "string", "minLength": 1, "maxLength": 64},
                                      "reason": {"type": "string", "maxLength": 200}}},
    "flag": {"type": "object", "required": ["label"], "additionalProperties": False,
             "properties": {"label": {"type": "string", "minLength": 1, "maxLength": 64},
                            "score": {"type": "integer", "minimum": 0, "maximum": 100}}},
    "allow": {"type": "object", "additionalProperties": False, "properties": {}},
}


class ActionConflict(ValueError):
    """Two contexts registered the same action name with different parameter schemas."""


def _canon(schema):
    return json.dumps(schema, sort_keys=True)


def register(name, params_schema, _builtin=False):
    """Add an action to the whitelist.

    Args:
        name: the action name used in ``then: [{action: name, ...}]``.
        params_schema: JSON Schema (Draft 2020-12) of the action's parameters (the mapping without
            its ``action`` key).

    Raises:
        ActionConflict: the name is registered with a different schema (same schema: no-op).
    """
    Draft202012Validator.check_schema(params_schema)
    old = _actions.get(name)
    if old is not None and _canon(old[0]) != _canon(params_schema) and not old[2]:
        raise ActionConflict(f"action {name!r} is already registered with another parameter schema")
    _actions[name] = (params_schema, Draft202012Validator(params_schema), _builtin)


def names():
    return sorted(_actions)


def schema(name):
    return _actions[name][0] if name in _actions else None


def errors(action):
    """Problems with one action mapping, as (path suffix tuple, message, validator)."""
    name = action.get("action")
    if name not in _actions:
        return [(("action",), f"unknown action {name!r} (whitelist: {', '.join(names())})", "whitelist")]
    params = {k: v for k, v in action.items() if k != "action"}
    return [(tuple(e.absolute_path), e.message, e.validator)
            for e in sorted(_actions[name][1].iter_errors(params), key=lambda e: list(map(str, e.absolute_path)))]


for _name, _schema in BUILTIN.items():
    register(_name, _schema, _builtin=True)
