"""The exception tree. Each error knows its HTTP status and OpenAI-style error type and code, and
is turned into ``{"error": {"message", "type", "code", "param"}}`` in exactly one place
(``enginehouse.api.errors``)."""

from __future__ import annotations

from typing import Any


class EnginehouseError(Exception):
    status_code: int = 500
    error_type: str = "server_error"
    code: str = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.param = param
        self.headers = headers or {}

    def to_body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "code": self.code,
                "param": self.param,
            }
        }


class BadRequestError(EnginehouseError):
    status_code = 400
    error_type = "invalid_request_error"
    code = "bad_request"


class AuthenticationError(EnginehouseError):
    status_code = 401
    error_type = "authentication_error"
    code = "invalid_api_key"


class NotFoundError(EnginehouseError):
    status_code = 404
    error_type = "not_found_error"
    code = "not_found"


class ModelNotFoundError(NotFoundError):
    error_type = "invalid_request_error"
    code = "model_not_found"


class ConflictError(EnginehouseError):
    status_code = 409
    error_type = "conflict_error"
    code = "conflict"


class PayloadTooLargeError(EnginehouseError):
    status_code = 413
    error_type = "invalid_request_error"
    code = "request_too_large"


class ValidationFailedError(EnginehouseError):
    status_code = 422
    error_type = "invalid_request_error"
    code = "validation_error"


class ServiceUnavailableError(EnginehouseError):
    """Not serving now; ``retry_after`` seconds is a hint sent as the Retry-After header."""

    status_code = 503
    error_type = "service_unavailable"
    code = "not_ready"

    def __init__(self, message: str, *, retry_after: int = 5, code: str | None = None) -> None:
        super().__init__(message, code=code, headers={"Retry-After": str(retry_after)})
        self.retry_after = retry_after
