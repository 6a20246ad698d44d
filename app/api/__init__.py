"""Thin HTTP layer: one decorator that authenticates, checks scope, validates the body and documents the route."""
import functools
import re

from flask import current_app, g, request
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.routing.converters import IntegerConverter

from app.errors import Problem, validation_failed
# aliased: app.api.auth and app.api.audit are this package's own modules (blueprints)
from app.platform import audit as audit_log
from app.platform import auth as platform_auth
from app.platform import ratelimit
from app.schemas import MalformedJson, errors_of, loads

# Upper bound on integers accepted from JSON, so no arithmetic or column ever overflows.
MAX_INT = 2**62


class Int64Converter(IntegerConverter):
    """``<int:id>`` that stops at 2**63-1: a larger id is a 404, not an overflow in the database."""

    def __init__(self, map, fixed_digits=0, min=None, max=2**63 - 1, signed=False):  # noqa: A002
        super().__init__(map, fixed_digits=fixed_digits, min=min, max=max, signed=signed)

    def to_python(self, value):
        # werkzeug's ValidationError here makes the matcher answer 405 naming another rule's method;
        # an id no row can have is simply not found
        if int(value) > self.max:
            from werkzeug.exceptions import NotFound
            raise NotFound()
        return super().to_python(value)


# Text query parameters are bounded too: no client sends more than this in one value.
QUERY_MAX_LENGTH = 200


def q(description, type="string", required=False, **schema):  # noqa: A002
    """A typed, bounded query parameter for ``operation(query=...)``.

    ``q("page size", "integer", minimum=1, maximum=200, default=50)``; extra keywords are JSON Schema
    (``enum``, ``pattern``, ``format``, ``maxLength``...). ``query_int(name)`` reads its bounds from here.
    """
    schema = {"type": type, **schema}
    if type == "string" and "enum" not in schema:
        schema.setdefault("maxLength", QUERY_MAX_LENGTH)
    return {"description": description, "required": required, "schema": schema}


def page_query(cursor_type="integer", maximum=200, default=50):
    """The query parameters of a paged list: ``cursor`` (the ``next_cursor`` of the previous page) and a
    bounded ``limit``. Every list route takes them (``query={**filters, **PAGE}``) and answers
    ``page(items, next_cursor)``; tests/api/test_conventions.py checks every GET route for it."""
    cursor = (q("next_cursor of the previous page", "integer", minimum=1, maximum=2**63 - 1)
              if cursor_type == "integer" else q("next_cursor of the previous page"))
    return {"cursor": cursor, "limit": q("page size", "integer", minimum=1, maximum=maximum, default=default)}


PAGE = page_query()


def page_args():
    """``(cursor, limit)`` of a paged list as its ``page_query`` declares them (cursor None on the first page)."""
    declared = (_declared_query("cursor") or {}).get("schema", {})
    if declared.get("type") == "integer":
        return query_int("cursor"), query_int("limit")
    return request.args.get("cursor") or None, query_int("limit")


def page(items, next_cursor):
    """The one shape of a page: ``{"items": [...], "next_cursor": str | int | None}`` (None: the last page)."""
    from flask import jsonify
    return jsonify({"items": items, "next_cursor": next_cursor})


def _query_spec(spec):
    """Normalise ``operation(query=...)``: a bare description is a bounded string parameter."""
    return {name: (q(value) if isinstance(value, str) else value) for name, value in (spec or {}).items()}


UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def operation(summary, scope=None, body=None, public=False, tags=(), query=None, idempotent=False,
              status=200, permission=None, response=None, problems=None, content=None, path=None,
              readonly=False, allow_service=False, self_service=False, audit=None, rate_limited=False,
              also=None):
    """Declare an API operation.

    Args:
        summary: one line for the OpenAPI document.
        scope: API-key scope required (``x:read`` is implied by ``x:write``; ``admin`` implies all). A staff
            session holds the scopes its roles get from the ``access`` policy.
        body: schemas/ path of the request body schema (validated; the result is ``g.body``).
        public: no authentication (health, metrics, openapi, sign-in).
        tags: OpenAPI tags.
        query: dict of query parameter name -> ``q(...)`` (typed and bounded) or a bare description
            (a string of at most 200 characters).
        idempotent: the route requires an ``Idempotency-Key`` header. ``True``: the view applies it itself
            (``idempotency_key()`` + ``idempotency.run``); ``"replay"``: this decorator does, storing the
            view's status, JSON body and ETag, so a retry with the same key and body replays them.
            ``"body:<field>"``: idempotent by a client id in the body (e.g. ``event_id``), no header.
            ``"no-replay"``: the answer is a one-time secret (a session token, a TOTP secret) that must never
            be stored for a replay; a retry mints a new one and the unused one expires or is replaced.
            ``"state"``: the call sets a state of the caller (an agent going online, away, offline): a retry
            sets the same state and changes nothing more, as a PUT would, so no key is needed — and a refusal's
            decision row is committed, not rolled back with a replay transaction.
        readonly: a POST that changes nothing (validate, explain, a quote); it needs no idempotency.
        status: success status code, for the document.
        permission: a staff permission (``access`` policy) the acting person must hold (a tuple: any of them);
            the route is then taken by a person (staff session, or an ``act-as`` key naming one) and
            ``g.staff_no`` is set. A staff session needs the permission instead of the scope.
        response: schemas/ path of the success body (omitted: a documented free-form JSON object;
            False: no JSON body, only the media types in ``content``).
        problems: {status: "when"} for problems the route answers beyond those implied by the
            declaration (401/403 from ``scope``, 400/413/415/422 from ``body``, 409/428 from ``idempotent``,
            404 from path parameters, 422 from ``query``).
        content: other media types of the success body besides JSON, e.g. ``{"text/csv": "..."}``.
        path: {name: JSON Schema} of string path parameters the view checks itself (a mismatch is 422).
        allow_service: on a ``permission`` route, a key with the scope may also call without acting for a
            person (the service acts as itself; services refuse the steps only a person may take).
        self_service: a staff session that must first change its password or enrol TOTP may call it.
        audit: the audit action of a successful unsafe request (default ``<blueprint>.<endpoint>``);
            ``False`` for an unsafe method that changes nothing (implied by ``readonly``).
        also: {status: "when"} for other success statuses with the same body (e.g. 200 when an open
            conversation is answered again instead of created).
        rate_limited: an expensive route: each API key gets RATE_LIMIT_BURST calls at once, refilled at
            RATE_LIMIT_PER_MINUTE (429 ``rate-limited`` with Retry-After beyond that).
    """
    def deco(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            if not public:
                principal = platform_auth.authenticate(request.headers.get("Authorization"), request)
                g.principal = principal  # who failed authorisation is still logged
                g.principal = platform_auth.resolve(principal, request.headers, scope, permission, allow_service,
                                           self_service)
                g.staff_no = g.principal.get("staff_no")
                if rate_limited:
                    ratelimit.take(view.__name__, f"{g.principal.get('kind')}:{g.principal.get('id')}",
                                   current_app.config["RATE_LIMIT_PER_MINUTE"], current_app.config["RATE_LIMIT_BURST"])
            if idempotent in (True, "replay"):
                idempotency_key()  # 428 before the body is even read: the contract does not depend on it
            if wrapper.operation["query"]:
                check_query(wrapper.operation["query"])
            if body:
                g.body = parse_body(body)
            if not public and not readonly and audit is not False:
                g.audit_action = audit or request.endpoint  # for audit.request_row
            if idempotent == "replay":
                result = _replayed(view, args, kwargs)
            else:
                result = view(*args, **kwargs)
            if (not public and not readonly and audit is not False
                    and request.method in UNSAFE_METHODS):
                result = current_app.make_response(result)
                audit_log.from_response(audit or request.endpoint, kwargs, result)
            return result

        wrapper.operation = {"summary": summary, "scope": scope, "body": body, "public": public,
                             "tags": list(tags), "query": _query_spec(query), "idempotent": idempotent,
                             "status": status, "permission": permission, "response": response,
                             "problems": dict(problems or {}), "content": dict(content or {}),
                             "path": dict(path or {}), "readonly": readonly,
                             "allow_service": allow_service, "self_service": self_service,
                             "audit": audit, "rate_limited": rate_limited, "also": dict(also or {})}
        return wrapper
    return deco


def check_request_text():
    """Every route, before anything else: query parameters, path segments and headers with a control
    character, NUL or a lone surrogate are a 422 ``validation-failed`` naming each (``/query/<name>``,
    ``/path/<name>``, ``/header/<name>``) — never a 500 from a database or a parser further on, the same
    answer as such text in a body (checked by its schema in ``parse_body``)."""
    from app.schemas import param_errors, param_text_ok
    environ = request.environ
    # the common case in one scan: the raw query string, the path and every header (tab joins them: allowed)
    if param_text_ok("\t".join([environ.get("QUERY_STRING", ""), request.path,
                                *(f"{k}\t{v}" for k, v in request.headers.items())])) \
            and "%" not in environ.get("QUERY_STRING", ""):
        return
    pairs = [(f"/query/{k}", k, v) for k, vs in request.args.lists() for v in vs]
    pairs += [(f"/path/{k}", k, v) for k, v in (request.view_args or {}).items() if isinstance(v, str)]
    pairs.append(("/path", "path", request.path))
    pairs += [(f"/header/{k}", k, v) for k, v in request.headers.items()]
    errors = param_errors(pairs)
    if errors:
        raise validation_failed(errors)


_REPLAYED_HEADERS = ("ETag", "Location")


def _replayed(view, args, kwargs):
    """Run a state-changing view once per (API key, Idempotency-Key); a retry gets the stored answer."""
    from flask import make_response

    from app.platform import idempotency
    key = idempotency_key()

    def once():
        resp = make_response(view(*args, **kwargs))
        return {"status": resp.status_code, "body": resp.get_json(silent=True),
                "headers": {h: resp.headers[h] for h in _REPLAYED_HEADERS if h in resp.headers}}

    client = g.principal["id"] if isinstance(g.get("principal"), dict) else "-"
    _, stored, replayed = idempotency.run(client, key, f"{request.endpoint}:{request.path}",
                                          g.get("body"), once)
    resp = make_response(stored["body"], stored["status"])
    resp.headers.update(stored["headers"])
    if replayed:
        resp.headers["Idempotent-Replayed"] = "true"
    return resp


# Deeper JSON than this is refused before validation (recursion in the parser or validator would 500).
MAX_DEPTH = 32


def _check_ints(value, path=""):
    """Refuse integers beyond MAX_INT, NaN/Infinity and nesting deeper than MAX_DEPTH (iteratively)."""
    stack = [(value, path, 0)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, bool):
            continue
        if isinstance(value, int) and abs(value) > MAX_INT:
            raise validation_failed([{"pointer": path, "message": f"integer out of range (|n| <= {MAX_INT})",
                                      "validator": "maximum"}])
        if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
            raise validation_failed([{"pointer": path, "message": "NaN and Infinity are not numbers",
                                      "validator": "type"}])
        if isinstance(value, (dict, list)) and depth >= MAX_DEPTH:
            raise Problem(400, "too-deeply-nested", "Too deeply nested",
                          f"JSON nested deeper than {MAX_DEPTH} levels at {path or '/'}.")
        if isinstance(value, dict):
            stack.extend((v, path + "/" + str(k).replace("~", "~0").replace("/", "~1"), depth + 1)
                         for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, f"{path}/{i}", depth + 1) for i, v in enumerate(value))


def _body_bytes():
    """The body, at most MAX_CONTENT_LENGTH bytes (RequestEntityTooLarge beyond).

    A chunked body has no Content-Length; werkzeug then silently cuts it at the limit, so it is read
    here, one byte past the limit, to tell "too large" (413) from "malformed" (the cut JSON).
    """
    limit = request.max_content_length
    if request.content_length is not None or limit is None or "wsgi.input_terminated" not in request.environ:
        return request.get_data(cache=True)
    stream, parts, size = request.environ["wsgi.input"], [], 0
    while size <= limit:
        part = stream.read(min(65536, limit + 1 - size))
        if not part:
            break
        parts.append(part)
        size += len(part)
    if size > limit:
        raise RequestEntityTooLarge()
    return b"".join(parts)


def parse_body(schema_path):
    """The JSON request body, validated against ``schemas/<schema_path>``; raises Problem otherwise."""
    mimetype = request.mimetype or ""
    if not (mimetype == "application/json" or mimetype.endswith("+json")):
        raise Problem(415, "unsupported-media-type", "Unsupported media type",
                      "Send the request body as application/json.")
    try:
        raw = _body_bytes()
    except RequestEntityTooLarge:
        raise Problem(413, "payload-too-large", "Payload too large",
                      f"The request body is larger than {request.max_content_length} bytes.") from None
    try:
        data = loads(raw)
    except RecursionError:  # the JSON parser's own nesting limit
        raise Problem(400, "too-deeply-nested", "Too deeply nested",
                      f"JSON nested deeper than {MAX_DEPTH} levels.") from None
    except MalformedJson as exc:
        if exc.code == "duplicate-key":
            raise Problem(400, "duplicate-key", "Duplicate key", f"{exc} (the body is ambiguous).") from None
        raise Problem(400, "malformed-json", "Malformed JSON", "The request body is not valid JSON.") from None
    _check_ints(data)
    errors = errors_of(schema_path, data)
    if errors:
        raise validation_failed(errors)
    return data


def check_query(declared):
    """422 listing every declared query parameter that is missing, mistyped or out of bounds."""
    from jsonschema import Draft202012Validator
    errors = []
    for name, spec in declared.items():
        values = request.args.getlist(name)
        pointer = f"/query/{name}"
        if not values:
            if spec.get("required"):
                errors.append({"pointer": pointer, "validator": "required", "message": "required"})
            continue
        schema = spec["schema"]
        for raw in values:
            value = raw
            if schema.get("type") == "integer":
                if not re.fullmatch(r"-?\d{1,19}", raw):
                    errors.append({"pointer": pointer, "validator": "type", "message": "expected an integer"})
                    continue
                value = int(raw)
            elif "\x00" in raw:
                errors.append({"pointer": pointer, "validator": "pattern", "message": "NUL is not allowed"})
                continue
            for err in Draft202012Validator(schema).iter_errors(value):
                errors.append({"pointer": pointer, "validator": err.validator, "message": err.message})
    if errors:
        raise validation_failed(errors)


def _declared_query(name):
    """The ``q(...)`` declaration of a query parameter of the current route, or None."""
    from flask import current_app
    view = current_app.view_functions.get(request.endpoint)
    return (getattr(view, "operation", None) or {}).get("query", {}).get(name)


_UNSET = object()


def query_int(name, default=_UNSET, minimum=None, maximum=None):
    """An integer query parameter within the bounds its ``q(...)`` declares (explicit arguments win)."""
    declared = (_declared_query(name) or {}).get("schema", {})
    if default is _UNSET:
        default = declared.get("default")
    minimum = declared.get("minimum", 0) if minimum is None else minimum
    maximum = declared.get("maximum", MAX_INT) if maximum is None else maximum
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    if not re.fullmatch(r"-?\d{1,19}", raw) or not minimum <= int(raw) <= maximum:
        raise validation_failed([{"pointer": f"/query/{name}", "validator": "type",
                                  "message": f"expected an integer in [{minimum}, {maximum}]"}])
    return int(raw)


def idempotency_key(required=True):
    """The Idempotency-Key header (1..200 chars of [A-Za-z0-9_.:-])."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        if required:
            raise Problem(428, "idempotency-key-required", "Idempotency-Key required",
                          "State-changing calls need an Idempotency-Key header so retries are safe.")
        return None
    if not re.fullmatch(r"[A-Za-z0-9_.:\-]{1,200}", key):
        raise validation_failed([{"pointer": "/headers/Idempotency-Key", "validator": "pattern",
                                  "message": "1-200 characters of A-Z a-z 0-9 _ . : -"}])
    return key
