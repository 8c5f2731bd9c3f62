"""The one place errors become HTTP answers: ``{"error": {message, type, code, param}}``."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException

from enginehouse.disconnect import ClientLeft, client_left_response
from enginehouse.errors import BadRequestError, ConflictError, EnginehouseError, ValidationFailedError
from enginehouse.methods import method_not_allowed

log = logging.getLogger(__name__)

_STATUS_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
}


def error_response(error: EnginehouseError) -> JSONResponse:
    return JSONResponse(error.to_body(), status_code=error.status_code, headers=error.headers)


def validation_error_from(errors: list[Any]) -> EnginehouseError:
    """Pydantic/FastAPI validation errors → one readable message; bad JSON is a 400."""
    if any(e.get("type") == "json_invalid" for e in errors):
        return BadRequestError("the request body is not valid JSON", code="invalid_json")
    if any(tuple(e.get("loc", ())) == ("body",) and e.get("type") == "model_attributes_type"
           for e in errors):
        return BadRequestError(
            "the request body must be a JSON object sent with 'Content-Type: application/json'",
            code="invalid_json",
        )
    parts, first_param = [], None
    for error in errors[:5]:
        location = [str(p) for p in error.get("loc", ()) if p not in ("body",)]
        where = ".".join(location)
        first_param = first_param or where or None
        message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return ValidationFailedError("; ".join(parts) or "invalid request body", param=first_param)


async def _on_enginehouse_error(_request: Request, exc: EnginehouseError) -> JSONResponse:
    return error_response(exc)


async def _on_validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
    return error_response(validation_error_from(list(exc.errors())))


async def _on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    error = EnginehouseError(str(exc.detail), code=str(exc.status_code), headers=dict(exc.headers or {}))
    error.status_code = exc.status_code
    error.error_type = _STATUS_TYPES.get(exc.status_code, "server_error")
    if exc.status_code == 404:
        error.message = "no such route"
        error.code = "not_found"
    elif exc.status_code == 405:
        error.message, allow = method_not_allowed(request)
        error.headers.update(allow)
        error.code = "method_not_allowed"
    return error_response(error)


async def _on_integrity_error(_request: Request, _exc: IntegrityError) -> JSONResponse:
    # Two requests raced for the same name; the loser gets what a sequential caller would.
    return error_response(ConflictError("that name is already taken", code="name_taken"))


async def _on_client_left(_request: Request, _exc: Exception) -> Response:
    return client_left_response()  # nobody reads it; the access log and metrics do


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    error = EnginehouseError("internal error; the server log has the details")
    return error_response(error)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(EnginehouseError, _on_enginehouse_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _on_validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _on_http_error)  # type: ignore[arg-type]
    app.add_exception_handler(IntegrityError, _on_integrity_error)  # type: ignore[arg-type]
    app.add_exception_handler(ClientLeft, _on_client_left)
    app.add_exception_handler(Exception, _on_unexpected)
