"""OpenAPI 3.1 document generated from the routes and the schemas in schemas/."""
import copy
import re
from urllib.parse import urldefrag, urljoin

from werkzeug.routing.converters import (FloatConverter, IntegerConverter, PathConverter,
                                         UUIDConverter)

from app.schemas import BASE, get_schema

PROBLEM = {"$ref": "#/components/schemas/Problem"}
PROBLEM_SCHEMA = {
    "type": "object", "required": ["type", "title", "status", "code"],
    "properties": {"type": {"type": "string", "format": "uri"}, "title": {"type": "string"},
                   "status": {"type": "integer"}, "code": {"type": "string", "pattern": "^[a-z0-9]+(-[a-z0-9]+)*$"},
                   "detail": {"type": "string"},
                   "errors": {"type": "array", "items": {
                       "type": "object", "required": ["pointer", "message"],
                       "properties": {"pointer": {"type": "string"}, "message": {"type": "string"},
                                      "validator": {"type": "string"}}}}}}
# Problems every operation of a kind can answer, so clients see them in the document.
_COMMON = {"400": "Malformed request", "401": "Missing, unknown or revoked API key",
           "403": "API key lacks the scope", "413": "Request body too large",
           "415": "Body is not application/json", "422": "Body fails its JSON Schema, or control characters in the query, path or headers (every field listed)",
           "428": "Idempotency-Key header required", "409": "Idempotency-Key reused with another body"}


def _path(rule):
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def _param_schema(converter):
    if isinstance(converter, IntegerConverter):
        schema = {"type": "integer", "minimum": 0 if converter.min is None else converter.min}
        if converter.max is not None:
            schema["maximum"] = converter.max
        return schema
    if isinstance(converter, FloatConverter):
        return {"type": "number"}
    if isinstance(converter, UUIDConverter):
        return {"type": "string", "format": "uuid"}
    if isinstance(converter, PathConverter):
        return {"type": "string"}
    return {"type": "string", "pattern": "^[^/]+$"}


def component_name(relpath):
    """Component name of schemas/<relpath>: ``api/ledger/recharge.json`` -> ``api.ledger.recharge``."""
    return relpath.removesuffix(".json").replace("/", ".")


def _refs(node, base):
    """Every absolute $ref URI (without fragment) under node, resolved against the schema's $id."""
    if isinstance(node, dict):
        if isinstance(node.get("$id"), str):
            base = urljoin(base, node["$id"])
        ref = node.get("$ref")
        if isinstance(ref, str):
            yield urldefrag(urljoin(base, ref))[0]
        for key, value in node.items():
            if key not in ("const", "enum", "examples", "default"):
                yield from _refs(value, base)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value, base)


def _collect(relpaths):
    """The schemas named plus every schemas/ file they reference, transitively: {relpath: schema}."""
    out, todo = {}, list(relpaths)
    while todo:
        rel = todo.pop()
        if rel in out:
            continue
        schema = copy.deepcopy(get_schema(rel))
        out[rel] = schema
        for uri in _refs(schema, BASE + rel):
            if uri.startswith(BASE) and uri != BASE + rel:
                todo.append(uri[len(BASE):])
    return out


def build(app):
    """The OpenAPI 3.1 document of every route declared with ``@operation``."""
    paths, bodies = {}, []
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: (r.rule, r.endpoint)):
        view = app.view_functions.get(rule.endpoint)
        op = getattr(view, "operation", None)
        if op is None:
            continue
        item = paths.setdefault(_path(rule.rule), {})
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            responses = {str(op["status"]): {"description": "Success"}}
            codes = ["422"]  # every route: control characters in query, path or headers (check_request_text)
            if op["body"]:
                codes += ["400", "413", "415"]
            if not op["public"]:
                codes += ["401", "403"]
            if op["idempotent"]:
                codes += ["409", "428"]
            for code in sorted(codes):
                responses[code] = {"description": _COMMON[code], "content": {
                    "application/problem+json": {"schema": PROBLEM}}}
            responses["default"] = {"description": "Problem (RFC 9457)",
                                    "content": {"application/problem+json": {"schema": PROBLEM}}}
            doc = {"operationId": f"{rule.endpoint}.{method.lower()}", "summary": op["summary"],
                   "tags": op["tags"], "responses": responses}
            converters = getattr(rule, "_converters", {})
            params = [{"name": a, "in": "path", "required": True,
                       "schema": _param_schema(converters.get(a))} for a in sorted(rule.arguments)]
            params += [{"name": q, "in": "query", "required": False, "description": d,
                        "schema": {"type": "string"}} for q, d in op["query"].items()]
            if op["idempotent"]:
                params.append({"name": "Idempotency-Key", "in": "header", "required": True,
                               "description": "Same key + same body returns the first result; "
                                              "same key + another body is 409.",
                               "schema": {"type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,200}$"}})
            if params:
                doc["parameters"] = params
            if not op["public"]:
                doc["security"] = [{"apiKey": []}]
                if op["scope"]:
                    doc["x-scope"] = op["scope"]
                    doc["description"] = f"Requires scope `{op['scope']}` (or `admin`)."
                if op.get("permission"):
                    perms = op["permission"] if isinstance(op["permission"], str) else " or ".join(op["permission"])
                    doc["x-permission"] = perms
                    doc["description"] = (doc.get("description", "") + f" Taken by a person holding `{perms}` "
                                          "(a staff session, or an act-as key with the Patron-Act-As header)"
                                          + (", or by a service key acting as itself." if op.get("allow_service")
                                             else ".")).strip()
            if op["body"]:
                bodies.append(op["body"])
                doc["requestBody"] = {"required": True, "content": {"application/json": {
                    "schema": {"$ref": f"#/components/schemas/{component_name(op['body'])}"}}}}
            item[method.lower()] = doc
    schemas = {"Problem": PROBLEM_SCHEMA}
    # Each file keeps its $id, so a $ref between files resolves inside this document (OAS 3.1).
    for rel, schema in sorted(_collect(bodies).items()):
        schemas[component_name(rel)] = schema
    return {
        "openapi": "3.1.0",
        "info": {"title": "Patron API", "version": "1",
                 "description": "Customer service, accounts and membership, driven by policy files. "
                                "Errors are application/problem+json with a stable `code`."},
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "servers": [{"url": "/"}],
        "security": [],
        "paths": paths,
        "components": {"schemas": schemas,
                       "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer",
                                                      "bearerFormat": "ptr_<id>_<secret> | pts_<id>_<secret>",
                                                      "description": "an API key (patron apikey create --name X "
                                                                     "--scopes a,b) or a staff session token "
                                                                     "(POST /v1/auth/login)"}}},
    }
