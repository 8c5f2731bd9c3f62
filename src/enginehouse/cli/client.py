"""A small client for the management API: JSON in, JSON out, every failure an ``ApiError`` or
``CliError`` whose message a user can act on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from enginehouse.cli.errors import ApiError, CliError

# Management calls answer quickly; only a wedged server takes longer than this.
REQUEST_TIMEOUT_S = 30.0


class ApiClient:
    def __init__(
        self, base_url: str, api_key: str, transport: httpx.BaseTransport | None = None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        try:
            self._http = httpx.Client(
                base_url=self.base_url,
                headers={"Authorization": f"Bearer {api_key}"},
                timeout=REQUEST_TIMEOUT_S,
                transport=transport,
            )
        except (httpx.InvalidURL, ValueError) as exc:
            raise CliError(f"invalid server URL {base_url!r}: {exc}") from None

    def __enter__(self) -> "ApiClient":
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def get(self, path: str, params: dict[str, str] | None = None) -> Any:
        return self._request("GET", path, params=params)

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self._request("POST", path, json=body if body is not None else {})

    def upload(self, path: str, file: Path, fields: dict[str, str]) -> Any:
        """POST ``file`` as multipart/form-data (field ``file``) with ``fields``; streamed."""
        try:
            handle = open(file, "rb")
        except OSError as exc:
            raise CliError(f"cannot read {file}: {exc.strerror or exc}") from None
        with handle:
            # An upload may take longer than a management call.
            return self._request("POST", path, files={"file": (file.name, handle, "application/jsonl")},
                                 data=fields, timeout=max(REQUEST_TIMEOUT_S, 600.0))

    def delete(self, path: str) -> Any:
        return self._request("DELETE", path)

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.ConnectError:
            raise CliError(
                f"cannot reach the enginehouse server at {self.base_url} "
                "(is `enginehouse up` running?)"
            ) from None
        except httpx.TimeoutException:
            raise CliError(f"the server at {self.base_url} did not answer in time") from None
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise CliError(f"request to {self.base_url}{path} failed: {exc}") from None
        if response.status_code >= 400:
            raise _api_error(response)
        try:
            return response.json()
        except ValueError:
            raise CliError(
                f"{self.base_url} answered {method} {path} with something that is not JSON; "
                "is it an enginehouse server?"
            ) from None


def _api_error(response: httpx.Response) -> ApiError:
    """The error envelope's message; a body of another shape (a proxy, another server) still
    yields a sentence with the HTTP status."""
    message, code = f"the server answered HTTP {response.status_code}", None
    try:
        error = response.json().get("error")
        if isinstance(error, dict) and error.get("message"):
            message, code = str(error["message"]), error.get("code")
    except (ValueError, AttributeError):
        pass
    if response.status_code == 401:
        message += " (give a valid key with --api-key or ENGINEHOUSE_API_KEY)"
    return ApiError(message, response.status_code, code)
