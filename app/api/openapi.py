"""OpenAPI 3.1 document generated from the routes and the schemas in schemas/."""
import re

from app.schemas import get_schema, schema_id

PROBLEM = {"$ref": "#/components/schemas/Problem"}


def _path(rule):
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def build(app):
    paths, schemas = {}, {
        "Problem": {"type": "object", "required": ["type", "title", "status", "code"],
                    "properties": {"type": {"type": "string"}, "title": {"type": "string"},
                                   "status": {"type": "integer"}, "code": {"type": "string"},
                                   "detail": {"type": "string"},
                                   "errors": {"type": "array", "items": {"type": "object"}}}}}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        view = app.view_functions.get(rule.endpoint)
        op = getattr(view, "operation", None)
        if op is None:
            continue
        item = paths.setdefault(_path(rule.rule), {})
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            doc = {"operationId": f"{rule.endpoint}.{method.lower()}", "summary": op["summary"],
                   "tags": op["tags"], "responses": {
                       str(op["status"]): {"description": "Success"},
                       "default": {"description": "Problem (RFC 9457)",
                                   "content": {"application/problem+json": {"schema": PROBLEM}}}}}
            params = [{"name": a, "in": "path", "required": True, "schema": {"type": "string"}}
                      for a in sorted(rule.arguments)]
            params += [{"name": q, "in": "query", "required": False, "description": d,
                        "schema": {"type": "string"}} for q, d in op["query"].items()]
            if op["idempotent"]:
                params.append({"name": "Idempotency-Key", "in": "header", "required": True,
                               "schema": {"type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,200}$"}})
            if params:
                doc["parameters"] = params
            if not op["public"]:
                doc["security"] = [{"apiKey": []}]
                if op["scope"]:
                    doc["x-scope"] = op["scope"]
            if op["body"]:
                name = op["body"].removesuffix(".json").replace("/", ".")
                schemas[name] = get_schema(op["body"])
                doc["requestBody"] = {"required": True, "content": {"application/json": {
                    "schema": {"$ref": schema_id(op["body"])}}}}
            item[method.lower()] = doc
    return {
        "openapi": "3.1.0",
        "info": {"title": "Patron API", "version": "1",
                 "description": "Customer service, accounts and membership, driven by policy files."},
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "paths": paths,
        "components": {"schemas": schemas,
                       "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer",
                                                      "bearerFormat": "ptr_<id>_<secret>"}}},
    }
