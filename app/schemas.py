"""JSON Schemas from schemas/: one referencing.Registry by $id, validators with every error listed."""
import json
import re
from functools import lru_cache
from urllib.parse import urldefrag, urljoin

from jsonschema import Draft202012Validator, validators
from referencing import Registry, Resource

from app.config import ROOT

BASE = "https://patron.dev/schemas/"
SCHEMA_DIR = ROOT / "schemas"


def schema_id(relpath):
    """The $id of the schema stored at schemas/<relpath>."""
    return BASE + relpath


@lru_cache(maxsize=1)
def registry():
    """Every schema under schemas/, registered by $id (which must equal its path)."""
    resources = []
    for path in sorted(SCHEMA_DIR.rglob("*.json")):
        rel = path.relative_to(SCHEMA_DIR).as_posix()
        contents = json.loads(path.read_text(encoding="utf-8"))
        expected = schema_id(rel)
        if contents.get("$id") != expected:
            raise ValueError(f"{path}: $id must be {expected!r}, found {contents.get('$id')!r}")
        resources.append((expected, Resource.from_contents(contents)))
    return Registry().with_resources(resources)


def get_schema(relpath):
    return registry()[schema_id(relpath)].contents


def _is_integer(_checker, instance):
    # jsonschema counts 100.0 as an integer; a JSON number is an integer only when written as one
    # (``100``), so ``100.0``, ``1e2`` and ``99.99999999999999999`` (all floats once parsed) are refused.
    return isinstance(instance, int) and not isinstance(instance, bool)


_Validator = validators.extend(
    Draft202012Validator,
    type_checker=Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_integer))


def _inline(node, base, stack=()):
    """``node`` with every ``$ref`` replaced by what it points at, resolved once here instead of on every
    validation (the registry lookup cost more than the checks themselves on a hot API path).

    A reference that recurses (the condition language) stays a ``$ref``, made absolute, for the registry to
    resolve. Siblings of a ``$ref`` apply together with it (2020-12), hence ``allOf`` where there are any.
    """
    if isinstance(node, list):
        return [_inline(v, base, stack) for v in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key in ("$ref", "const", "enum", "examples", "default"):
            out[key] = value
        elif key in ("properties", "patternProperties", "$defs", "dependentSchemas"):
            out[key] = {k: _inline(v, base, stack) for k, v in value.items()} if isinstance(value, dict) else value
        else:
            out[key] = _inline(value, base, stack)
    ref = out.get("$ref")
    if not isinstance(ref, str):
        return out
    target = urljoin(base, ref)
    if target in stack:
        out["$ref"] = target
        return out
    resolved = registry().resolver(base_uri=base).lookup(ref)
    inner = _inline(resolved.contents, urldefrag(target)[0], stack + (target,))
    del out["$ref"]
    return {**out, "allOf": out.get("allOf", []) + [inner]} if out else inner


@lru_cache(maxsize=None)
def validator(relpath):
    schema = get_schema(relpath)
    Draft202012Validator.check_schema(schema)
    return _Validator(_inline(schema, schema_id(relpath)), registry=registry())


class MalformedJson(ValueError):
    """A body that is not one JSON value (``code`` says why: malformed-json, duplicate-key)."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


def _no_duplicates(pairs):
    out = {}
    for key, value in pairs:
        if key in out:
            raise MalformedJson("duplicate-key", f"duplicate key {key!r} in a JSON object")
        out[key] = value
    return out


def _no_constants(name):
    raise MalformedJson("malformed-json", f"{name} is not a JSON number")


def loads(raw):
    """Parse a JSON document strictly: duplicate keys and NaN/Infinity are refused (MalformedJson).

    Numbers keep the form they were written in: ``100`` is an int, ``100.0`` and ``1e2`` are floats
    (which the ``integer`` type of every schema refuses).
    """
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedJson("malformed-json", "the body is not UTF-8") from None
    try:
        return json.loads(raw, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except MalformedJson:
        raise
    except ValueError as exc:
        raise MalformedJson("malformed-json", f"not valid JSON: {exc}") from None


# Text PostgreSQL cannot store (NUL) or UTF-8 cannot encode (lone surrogates): refused for every
# string of every body, so both engines answer the same 422 instead of one storing it and the other failing.
_BAD_TEXT = re.compile("[\x00\ud800-\udfff]")


# Query parameters, path segments and headers carry no free text with line breaks: every control
# character but TAB is refused there as well (besides NUL and lone surrogates).
_BAD_PARAM = re.compile("[\x00-\x08\x0a-\x1f\x7f\ud800-\udfff]")


def param_text_ok(text):
    """True when ``text`` holds no control character (tab aside), NUL or lone surrogate (see param_errors)."""
    return _BAD_PARAM.search(text) is None


def param_errors(pairs):
    """Errors (as errors_of) for each (pointer, name, value) of a query/path/header holding a control character,
    NUL or a lone surrogate (``/query/<name>``, ``/path/<name>``, ``/header/<name>``)."""
    out = []
    for pointer, name, value in pairs:
        if _BAD_PARAM.search(name) or _BAD_PARAM.search(value):
            out.append({"pointer": pointer, "validator": "text",
                        "message": f"control characters, NUL and lone surrogates are not allowed in {name!r}"})
    return out


def text_errors(instance, raw=()):
    """Errors (as errors_of) for every string or object key holding NUL or a lone surrogate.

    Strings whose pointer starts with one of ``raw`` are left to their own reader (policy YAML).
    """
    out = []
    stack = [(instance, "")]
    while stack:
        value, path = stack.pop()
        if isinstance(value, str):
            if _BAD_TEXT.search(value) and not path.startswith(tuple(raw) or ("\0",)):
                out.append({"pointer": path, "validator": "text",
                            "message": "NUL characters and lone surrogates are not allowed in text"})
        elif isinstance(value, dict):
            for k, v in value.items():
                child = path + "/" + str(k).replace("~", "~0").replace("/", "~1")
                if _BAD_TEXT.search(k):
                    out.append({"pointer": child, "validator": "text",
                                "message": "NUL characters and lone surrogates are not allowed in names"})
                stack.append((v, child))
        elif isinstance(value, list):
            stack.extend((v, f"{path}/{i}") for i, v in enumerate(value))
    return sorted(out, key=lambda e: e["pointer"])


def pointer(path):
    """JSON pointer (RFC 6901) of a jsonschema error path."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def errors_of(relpath, instance):
    """Every validation error as {"pointer", "message", "validator"}, sorted by pointer.

    Besides the schema, every string is checked for NUL and lone surrogates (``text_errors``).
    """
    out = text_errors(instance, get_schema(relpath).get("x-raw-text", ()))
    for err in validator(relpath).iter_errors(instance):
        out.append({"pointer": pointer(err.absolute_path), "message": err.message,
                    "validator": err.validator})
    return sorted(out, key=lambda e: (e["pointer"], e["message"]))
