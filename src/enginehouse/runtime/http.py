"""HTTP plumbing shared by the replica's endpoints: strict body parsing, errors as values, SSE."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from enginehouse.disconnect import ClientLeft, ClosingStreamingResponse, client_left_response
from enginehouse.errors import BadRequestError, EnginehouseError, ValidationFailedError
from enginehouse.methods import method_not_allowed
from enginehouse.protocol.openai import describe_validation_error

log = logging.getLogger(__name__)

ModelT = TypeVar("ModelT", bound=BaseModel)


async def parse_body(
    request: Request, model: type[ModelT], *, invalid: type[EnginehouseError] = BadRequestError
) -> ModelT:
    """The body as ``model``; malformed JSON or a failed validation becomes ``invalid`` (400 by
    default, as OpenAI answers; management-style endpoints pass the 422 error)."""
    raw = await request.body()
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise invalid(f"request body is not valid JSON: {exc}", code="invalid_json") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        message, param = describe_validation_error(exc)
        raise invalid(message, param=param) from None


def error_response(error: EnginehouseError) -> JSONResponse:
    return JSONResponse(error.to_body(), status_code=error.status_code, headers=error.headers or None)


def sse_event(payload: BaseModel | dict[str, Any]) -> str:
    text = payload.model_dump_json() if isinstance(payload, BaseModel) else json.dumps(payload)
    return f"data: {text}\n\n"


SSE_DONE = "data: [DONE]\n\n"


class StreamEnvelope:
    """What every chunk of one stream shares (id, object, created, model), written once by the
    response model: a token's chunk is then its one choice's JSON spliced in, which costs the event
    loop (and the engine thread, which shares its GIL) a few microseconds instead of a model dump."""

    def __init__(self, empty_chunk: BaseModel) -> None:
        head, found, tail = empty_chunk.model_dump_json().partition('"choices":[]')
        if not found:
            raise ValueError("a stream's envelope is a chunk with an empty 'choices' list")
        self._head = f'data: {head}"choices":['
        self._tail = f"]{tail}\n\n"

    def event(self, choice_json: str) -> str:
        return self._head + choice_json + self._tail


def json_text(value: str | None) -> str:
    """``value`` as a JSON string (``null`` for None), as the response models write it."""
    return "null" if value is None else json.dumps(value, ensure_ascii=False)


def sse_response(chunks: AsyncIterator[str], on_close: Callable[[], None] = lambda: None) -> StreamingResponse:
    """An event stream; ``on_close`` runs when the response ends however it ends, including a
    client that left before the first event (when ``chunks`` is never iterated at all)."""
    # no-cache and no proxy buffering: each token should reach the client as it is made.
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return ClosingStreamingResponse(chunks, on_close, media_type="text/event-stream", headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Every error leaves as ``{"error": {...}}``; nothing leaves as a traceback."""

    @app.exception_handler(EnginehouseError)
    async def _known(_: Request, exc: EnginehouseError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        what = str(first.get("msg", "invalid request"))
        message = f"{where}: {what}" if where else what
        return error_response(ValidationFailedError(message, param=where or None))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        error = EnginehouseError(str(exc.detail), code="not_found" if exc.status_code == 404 else "http_error",
                                 headers=dict(exc.headers or {}))
        error.status_code = exc.status_code
        error.error_type = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        if exc.status_code == 405:
            error.message, allow = method_not_allowed(request)
            error.headers.update(allow)
            error.code = "method_not_allowed"
        return error_response(error)

    @app.exception_handler(ClientLeft)
    async def _client_left(_: Request, __: ClientLeft) -> Response:
        return client_left_response()  # nobody reads it; the access log and metrics do

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error in %s %s", request.method, request.url.path)
        return error_response(EnginehouseError(f"internal error ({type(exc).__name__}); see the replica log"))
