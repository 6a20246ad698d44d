"""JSON Schemas from schemas/: one referencing.Registry by $id, validators with every error listed."""
import json
from functools import lru_cache

from jsonschema import Draft202012Validator
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


@lru_cache(maxsize=None)
def validator(relpath):
    schema = get_schema(relpath)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, registry=registry())


def pointer(path):
    """JSON pointer (RFC 6901) of a jsonschema error path."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def errors_of(relpath, instance):
    """Every validation error as {"pointer", "message", "validator"}, sorted by pointer."""
    out = []
    for err in validator(relpath).iter_errors(instance):
        out.append({"pointer": pointer(err.absolute_path), "message": err.message,
                    "validator": err.validator})
    return sorted(out, key=lambda e: (e["pointer"], e["message"]))
