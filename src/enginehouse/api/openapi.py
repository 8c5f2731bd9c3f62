"""The OpenAPI document (``GET /openapi.json``, shown at ``/docs``): every route, its request body,
its success answer and every error status it can answer, each with the error envelope.

FastAPI documents what it parses itself. The inference routes read their raw body (the gateway
validates it with the endpoint's request model and forwards the client's bytes unchanged), so
their bodies and answers are added here from the same pydantic models the gateway and replicas
validate with. Error statuses follow from what a route is (``_error_statuses``): the middleware's
checks apply to every route, the key check to every ``/v1`` route, and so on; the document is
checked against a live server by ``tests/integration/test_openapi.py``.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts
from pydantic import BaseModel, ConfigDict
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from enginehouse.api.deps import current_org
from enginehouse.gateway.router import INFERENCE_ENDPOINTS
from enginehouse.replicaauth import SECRET_HEADER
from enginehouse.services.pages import DEFAULT_LIMIT, MAX_LIMIT

Obj = dict[str, Any]
_REF = "#/components/schemas/{model}"


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: str
    type: str
    code: str
    param: str | None


class ErrorResponse(BaseModel):
    """Every error answer, whatever its status (OpenAI's envelope)."""

    model_config = ConfigDict(extra="forbid")

    error: ErrorDetail


_ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "Bad request: the body is not JSON (or holds a NUL byte, a lone surrogate or nests too "
         "deep), the URL holds a NUL, a query parameter is invalid; on inference routes also a body "
         "that fails the endpoint's request model, or an endpoint that does not fit the "
         "deployment's task type (the message names the one that does).",
    401: "No API key, or an unknown one (send X-API-Key or Authorization: Bearer).",
    404: "Unknown object, or another organization's; on inference routes an unknown model "
         "(code model_not_found).",
    409: "Conflict: the name is taken, the object is in the wrong state for this call, or (on "
         "inference) a base deployment whose engine serves a fine-tune in its place.",
    413: "The request body is larger than this server's limit (ENGINEHOUSE_MAX_REQUEST_BODY_BYTES).",
    422: "The body is JSON but fails validation; the message names the field.",
    503: "Not serving now (deployment not Deployed, engine waking, replica unreachable; on an "
         "artifact manifest, a large directory still being read for its digests, code "
         "artifact_preparing); try again after Retry-After seconds.",
}
_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before trying again.",
                                "schema": {"type": "integer", "minimum": 0}}}

# Methods whose body the request-limit middleware reads (and so may find too large or malformed).
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Routes that answer an event stream when the body asks for "stream": true.
STREAMING_PATHS = frozenset({"/v1/chat/completions", "/v1/completions"})
# Bodies or filters that name other objects (a training job, an engine, an experiment) that may
# not exist.
_NAMES_OBJECTS = frozenset({("POST", "/v1/deployments"), ("GET", "/v1/deployments"),
                            ("POST", "/v1/training-jobs")})

# Routes for replicas and training jobs' workers, which prove themselves with their secret header
# (api/routers/replica_artifacts.py, training_artifacts.py).
_SECRET_ONLY_PREFIXES = ("/v1/replica-artifacts/", "/v1/training-artifacts/")

_LIMIT_SCHEMA: Obj = {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT}

# The two ways to send a key (deps.api_key_from), and a replica's own secret (replica routes).
_SECURITY_SCHEMES: Obj = {
    "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    "Bearer": {"type": "http", "scheme": "bearer"},
    "ReplicaSecret": {"type": "apiKey", "in": "header", "name": SECRET_HEADER},
}


def install_openapi(app: FastAPI) -> None:
    """Replace ``app.openapi`` with the complete document (built once, on first request)."""
    cached: Obj = {}

    def openapi() -> Obj:
        if not cached:
            cached.update(build_document(app))
        return cached

    app.openapi = openapi  # type: ignore[method-assign]


def build_document(app: FastAPI) -> Obj:
    document = get_openapi(title=app.title, version=app.version, routes=app.routes,
                           description="enginehouse: management and OpenAI-compatible inference API")
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    # FastAPI's own 422 body; this API answers every error with ErrorResponse instead.
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    components["securitySchemes"] = _SECURITY_SCHEMES
    _add_schemas(schemas, _wire_models(), "validation")
    _add_schemas(schemas, [r for _, r in INFERENCE_ENDPOINTS.values()], "serialization")
    for route in api_routes(app):
        for method in sorted(route.methods):
            operation = document["paths"][route.path_format][method.lower()]
            _complete(operation, route, method)
    return document


def _wire_models() -> list[type[BaseModel]]:
    return [ErrorResponse, *(request for request, _ in INFERENCE_ENDPOINTS.values())]


def _add_schemas(schemas: Obj, models: list[type[BaseModel]], mode: JsonSchemaMode) -> None:
    _, top = models_json_schema([(m, mode) for m in models], ref_template=_REF)
    for name, schema in top.get("$defs", {}).items():
        if name in schemas and schemas[name] != schema:
            # Two different models under one name would make one $ref lie about the other.
            raise RuntimeError(f"two different schemas are both named {name!r}")
        schemas[name] = schema


def api_routes(app: FastAPI) -> list[RouteContext]:
    """Every documented API route, those of included routers too (FastAPI includes them lazily,
    so ``app.routes`` alone holds the routers, not their routes)."""
    return [context for context in iter_route_contexts(app.routes)
            if isinstance(context.original_route, APIRoute) and context.include_in_schema]


def _complete(operation: Obj, route: RouteContext, method: str) -> None:
    inference = INFERENCE_ENDPOINTS.get(route.path_format) if method == "POST" else None
    if inference is not None:
        request_model, response_model = inference
        operation["requestBody"] = {"required": True, "content": {
            "application/json": {"schema": {"$ref": _ref(request_model)}}}}
        operation["responses"] = {"200": _success(route.path_format, response_model)}
    for parameter in operation.get("parameters", []):
        if parameter["in"] == "query" and parameter["name"] == "limit":
            # Read as text (so a bad one is a 400 naming it, see api/paging.py), meant as a number.
            parameter["schema"] = _LIMIT_SCHEMA
    responses = operation.setdefault("responses", {})
    responses.pop("422", None)  # FastAPI's default; added back below where it is true
    for status in _error_statuses(route, method, inference is not None):
        responses[str(status)] = _error_answer(status)
    operation["security"] = _security_of(route)


def _error_statuses(route: RouteContext, method: str, inference: bool) -> list[int]:
    statuses = {400}  # a NUL in the URL, a malformed query: any route
    keyed = _needs_key(route.dependant)
    if keyed:
        statuses.add(401)
    if route.path_format.startswith(_SECRET_ONLY_PREFIXES):
        # A replica's or job's secret, not a key; only its own files; 503 while a large
        # directory's first reading is under way (its manifest or a file asked for first).
        statuses |= {401, 404, 503}
    if route.param_convertors or inference or (method, route.path_format) in _NAMES_OBJECTS:
        statuses.add(404)
    if method in _BODY_METHODS:
        statuses.add(413)
    if route.body_field is not None:
        statuses.add(422)
    if keyed and method in _BODY_METHODS:
        # A management write can meet a taken name or a wrong state; an inference call a
        # replaced base deployment (SPEC §4.3).
        statuses.add(409)
    if inference:
        statuses.add(503)
    return sorted(statuses)


def _needs_key(dependant: Dependant) -> bool:
    return any(d.call is current_org or _needs_key(d) for d in dependant.dependencies)


def _security_of(route: RouteContext) -> list[Obj]:
    if route.path_format.startswith(_SECRET_ONLY_PREFIXES):
        return [{"ReplicaSecret": []}]
    return [{"ApiKey": []}, {"Bearer": []}] if _needs_key(route.dependant) else []


def _error_answer(status: int) -> Obj:
    answer: Obj = {"description": _ERROR_DESCRIPTIONS[status],
                   "content": {"application/json": {"schema": {"$ref": _ref(ErrorResponse)}}}}
    if status == 503:
        answer["headers"] = _RETRY_AFTER
    return answer


def _success(path: str, response_model: type[BaseModel]) -> Obj:
    content: Obj = {"application/json": {"schema": {"$ref": _ref(response_model)}}}
    if path in STREAMING_PATHS:
        content["text/event-stream"] = {"schema": {
            "type": "string", "description": "with \"stream\": true: one JSON chunk per event, "
                                            "ending with 'data: [DONE]'"}}
    return {"description": "The answer.", "content": content}


def _ref(model: type[BaseModel]) -> str:
    return _REF.format(model=model.__name__)
