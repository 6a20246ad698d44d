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
    "description": "RFC 9457 problem details; switch on `code`. Some problems add members "
                   "(e.g. `needed`/`available` on insufficient-funds, `allowed` on transition-not-allowed).",
    "properties": {"type": {"type": "string", "format": "uri"}, "title": {"type": "string"},
                   "status": {"type": "integer"}, "code": {"type": "string", "pattern": "^[a-z0-9]+(-[a-z0-9]+)*$"},
                   "detail": {"type": "string"},
                   "errors": {"type": "array", "items": {
                       "type": "object", "required": ["pointer", "message"],
                       "properties": {"pointer": {"type": "string"}, "message": {"type": "string"},
                                      "validator": {"type": "string"}}}}}}
# The success body of an operation that declares no response schema: any JSON object.
FREE_FORM = {"type": "object", "description": "A JSON object; its members are described in the operation's "
                                              "summary and in docs/<context>.md (no schema is published yet)."}
# Problems an operation can answer because of how it is declared, so clients see them in the document.
_COMMON = {"400": "Malformed JSON, or nested too deeply", "401": "Missing, unknown or revoked API key",
           "403": "API key lacks the scope (or the acting person the permission)",
           "404": "No such resource", "413": "Request body too large",
           "415": "Body is not application/json",
           "422": "Body, query, path or headers fail validation (every field listed with a JSON pointer)",
           "428": "Idempotency-Key header required",
           "409": "Idempotency-Key reused with another body, or a state conflict (see `code`)",
           "429": "rate-limited: too many expensive calls for this key (see Retry-After)",
           "503": "The database or Redis is unreachable"}


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


def _component_ref(uri):
    """``#/components/schemas/<name>[/fragment]`` for an absolute schemas/ URI with an optional fragment."""
    doc, fragment = urldefrag(uri)
    ref = "#/components/schemas/" + component_name(doc[len(BASE):])
    if fragment and not fragment.startswith("/"):
        raise ValueError(f"{uri}: only JSON pointer fragments can be bundled")
    return ref + fragment


# Keywords whose value maps names to schemas (as app.schemas._inline reads them), never literal values.
_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "dependentSchemas")


def _bundle(node, base):
    """A copy of a schemas/ file whose $refs all point into components/schemas (no $id left to resolve by)."""
    if isinstance(node, list):
        return [_bundle(v, base) for v in node]
    if not isinstance(node, dict):
        return node
    if isinstance(node.get("$id"), str):
        base = urljoin(base, node["$id"])
    out = {}
    for key, value in node.items():
        if key in ("$id", "$schema"):
            continue
        if key == "$ref" and isinstance(value, str):
            out[key] = _component_ref(urljoin(base, value))
        elif key in _SCHEMA_MAPS and isinstance(value, dict):
            # name -> schema: a property may be called "examples" or "default" and still holds a schema
            out[key] = {name: _bundle(sub, base) for name, sub in value.items()}
        elif key in ("const", "enum", "examples", "default"):
            out[key] = copy.deepcopy(value)
        else:
            out[key] = _bundle(value, base)
    return out


def _refs(node, base):
    """Every absolute $ref URI (without fragment) under node, resolved against the schema's $id."""
    if isinstance(node, dict):
        if isinstance(node.get("$id"), str):
            base = urljoin(base, node["$id"])
        ref = node.get("$ref")
        if isinstance(ref, str):
            yield urldefrag(urljoin(base, ref))[0]
        for key, value in node.items():
            if key in _SCHEMA_MAPS and isinstance(value, dict):
                for sub in value.values():
                    yield from _refs(sub, base)
            elif key not in ("const", "enum", "examples", "default"):
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


def _schema_ref(relpath):
    return {"$ref": f"#/components/schemas/{component_name(relpath)}"}


def _problem(description):
    return {"description": description, "content": {"application/problem+json": {"schema": PROBLEM}}}


def _responses(op, has_path_params):
    """Success body plus every problem status the operation can answer (no blanket ``default``)."""
    content = {}
    if op["response"] is not False:  # False: the body is not JSON (only the media types in ``content``)
        content["application/json"] = {"schema": _schema_ref(op["response"]) if op["response"]
                                       else {"$ref": "#/components/schemas/Object"}}
    for media, description in op["content"].items():
        if media == "text/event-stream":  # described per event (id, event, data), as SSE clients read it
            content[media] = {"schema": {"type": "object", "description": description,
                                         "properties": {"id": {"type": "string"}, "event": {"type": "string"},
                                                        "data": {"type": "string"}, "retry": {"type": "integer"}}}}
            continue
        content[media] = {"schema": {"type": "string", "description": description}}
    responses = {str(op["status"]): {"description": "Success", "content": content}}
    for code, description in op.get("also", {}).items():
        responses[str(code)] = {"description": description, "content": copy.deepcopy(content)}
    codes = {"422": _COMMON["422"]}  # every route: control characters in query, path or headers (check_request_text)
    if op["body"]:
        codes.update({c: _COMMON[c] for c in ("400", "413", "415")})
    if not op["public"]:
        codes.update({c: _COMMON[c] for c in ("401", "403", "503")})
    if op["idempotent"] in (True, "replay"):
        codes.update({c: _COMMON[c] for c in ("409", "422", "428")})  # 422: a malformed key
    if op.get("rate_limited"):
        codes["429"] = _COMMON["429"]
    if has_path_params:
        codes["404"] = _COMMON["404"]
    if op["query"] or op["path"]:
        codes["422"] = _COMMON["422"]
    if op["query"]:
        codes["414"] = None  # answered by the HTTP server (gunicorn), not as problem+json
    for code, description in op["problems"].items():
        codes[str(code)] = description
    for code in sorted(codes):
        if code == "414":
            responses[code] = {"description": "Request line too long (the HTTP server's own answer)"}
        elif code != str(op["status"]):
            responses[code] = _problem(codes[code])
    return responses


def build(app):
    """The OpenAPI 3.1 document of every route declared with ``@operation``."""
    paths, used = {}, []
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: (r.rule, r.endpoint)):
        view = app.view_functions.get(rule.endpoint)
        op = getattr(view, "operation", None)
        if op is None:
            continue
        item = paths.setdefault(_path(rule.rule), {})
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            doc = {"operationId": f"{rule.endpoint}.{method.lower()}", "summary": op["summary"],
                   "tags": op["tags"], "responses": _responses(op, bool(rule.arguments))}
            converters = getattr(rule, "_converters", {})
            params = [{"name": a, "in": "path", "required": True,
                       "schema": op["path"].get(a) or _param_schema(converters.get(a))}
                      for a in sorted(rule.arguments)]
            params += [{"name": name, "in": "query", "required": spec["required"],
                        "description": spec["description"], "schema": spec["schema"]}
                       for name, spec in op["query"].items()]
            if isinstance(op["idempotent"], str) and op["idempotent"].startswith("body:"):
                doc["x-idempotent-by"] = op["idempotent"][len("body:"):]
            if op["idempotent"] in (True, "replay"):
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
                    doc["description"] = (f"Requires scope `{op['scope']}`." if op["scope"] == "admin"
                                          else f"Requires scope `{op['scope']}` (or `admin`).")
                if op.get("permission"):
                    perms = op["permission"] if isinstance(op["permission"], str) else " or ".join(op["permission"])
                    doc["x-permission"] = perms
                    doc["description"] = (doc.get("description", "") + f" Taken by a person holding `{perms}` "
                                          "(a staff session, or an act-as key with the Patron-Act-As header)"
                                          + (", or by a service key acting as itself." if op.get("allow_service")
                                             else ".")).strip()
            if op["body"]:
                used.append(op["body"])
                doc["requestBody"] = {"required": True, "content": {"application/json": {
                    "schema": _schema_ref(op["body"])}}}
            if op["response"]:
                used.append(op["response"])
            item[method.lower()] = doc
    schemas = {"Problem": PROBLEM_SCHEMA, "Object": FREE_FORM}
    # Bundled: every file becomes a component and every $ref points into components/schemas, so tools
    # that do not resolve embedded $ids (schemathesis, code generators) read the document.
    for rel, schema in sorted(_collect(used).items()):
        schemas[component_name(rel)] = _bundle(schema, BASE + rel)
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
