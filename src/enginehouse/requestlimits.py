"""Request bodies are bounded and checked before anything parses them, in the server (API and
gateway) and in every replica, by one ASGI middleware.

A body larger than ``max_body_bytes`` is a 413: known up front from Content-Length, or found
while reading a chunked body, which stops at the limit. A body that fits is read whole, checked
by ``jsonbody.json_problem`` (nesting depth, lone surrogates) and handed to the app as if it came
from the client. Messages after the body still come from the client: the gateway and replicas
wait for ``http.disconnect`` to notice a caller that leaves (``enginehouse.disconnect``).

File uploads (``UPLOAD_PATHS``) are the exception: they are not held in memory but handed on as
they arrive, counted against their own, larger limit (``max_upload_bytes``), and the handler
writes them to disk.

A path holding a NUL character (``%00``) is a 400 as well: no route, id or name contains one,
and some databases refuse the query outright.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from enginehouse.errors import BadRequestError, EnginehouseError, PayloadTooLargeError
from enginehouse.jsonbody import json_problem
from enginehouse.settings import Settings

# Methods whose requests carry no body worth reading.
_NO_BODY = frozenset({"GET", "HEAD", "OPTIONS"})
# POST paths whose body is a multipart file upload, streamed rather than buffered.
# (The dashboard's fine-tune form uploads its dataset too: dashboard/training.py NEW_JOB_PATH.)
UPLOAD_PATHS = frozenset({"/v1/datasets", "/training-jobs/new"})
# Room for the multipart framing (boundaries, part headers, the name field) around the file.
_MULTIPART_SLACK = 64 * 1024


@dataclass(frozen=True)
class RequestLimits:
    max_body_bytes: int
    max_json_depth: int
    max_upload_bytes: int = 0  # a file upload's body; 0: uploads are bounded like any body

    @classmethod
    def from_settings(cls, settings: Settings) -> RequestLimits:
        return cls(settings.max_request_body_bytes, settings.max_json_depth, settings.max_dataset_bytes)

    @classmethod
    def default(cls) -> RequestLimits:
        """The settings' defaults, without reading the environment."""
        return cls.from_settings(Settings.model_construct())


class RequestLimitMiddleware:
    def __init__(self, app: ASGIApp, limits: RequestLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "\x00" in scope["path"] or b"%00" in scope.get("query_string", b""):
            await _answer(BadRequestError("the URL holds a NUL character (%00), which no id or name "
                                          "contains", code="invalid_url"), scope, receive, send)
            return
        if scope["method"] in _NO_BODY:
            await self.app(scope, receive, send)
            return
        content_type, declared = _content_headers(scope)
        if self.limits.max_upload_bytes and scope["path"] in UPLOAD_PATHS and scope["method"] == "POST":
            await self._stream_upload(declared, scope, receive, send)
            return
        if declared is not None and declared > self.limits.max_body_bytes:
            await _answer(self._too_large(), scope, receive, send)
            return
        try:
            body = await self._read(receive)
        except PayloadTooLargeError as error:
            await _answer(error, scope, receive, send)
            return
        if body is None:
            return  # the client left before its body was complete: nobody to answer
        if not content_type.startswith(b"multipart/"):
            problem = json_problem(body, self.limits.max_json_depth)
            if problem is not None:
                await _answer(problem, scope, receive, send)
                return
        await self.app(scope, _replay(body, receive), send)

    async def _stream_upload(self, declared: int | None, scope: Scope, receive: Receive, send: Send) -> None:
        limit = self.limits.max_upload_bytes + _MULTIPART_SLACK
        if declared is not None and declared > limit:
            await _answer(self._upload_too_large(), scope, receive, send)
            return
        size = 0

        async def counted() -> Message:
            nonlocal size
            message = await receive()
            size += len(message.get("body", b""))
            if size > limit:
                raise self._upload_too_large()  # the handler's error handling answers 413
            return message

        await self.app(scope, counted, send)

    def _upload_too_large(self) -> PayloadTooLargeError:
        limit = self.limits.max_upload_bytes
        return PayloadTooLargeError(
            f"the upload is larger than this server's limit of {_size(limit)} ({limit} bytes); "
            "split the file or raise ENGINEHOUSE_MAX_DATASET_BYTES")

    async def _read(self, receive: Receive) -> bytes | None:
        """The whole body; None when the client leaves first. Raises ``PayloadTooLargeError`` as
        soon as the body passes the limit, having read no further."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limits.max_body_bytes:
                raise self._too_large()  # stop reading: the rest is never buffered
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _too_large(self) -> PayloadTooLargeError:
        limit = self.limits.max_body_bytes
        return PayloadTooLargeError(
            f"the request body is larger than this server's limit of {_size(limit)} ({limit} bytes); "
            "send less in one request (the limit is ENGINEHOUSE_MAX_REQUEST_BODY_BYTES)")


def _replay(body: bytes, receive: Receive) -> Receive:
    """``receive`` that first hands out ``body`` whole, then whatever the client sends next."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


def _content_headers(scope: Scope) -> tuple[bytes, int | None]:
    """(Content-Type, Content-Length or None), read straight from the scope (ASGI servers give
    header names in lower case): on every request, so without building a ``Headers``."""
    content_type, length = b"", None
    for name, value in scope["headers"]:
        if name == b"content-type":
            content_type = value
        elif name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                length = None
    return content_type, length


def _size(n: int) -> str:
    return f"{n / 1024 / 1024:g} MiB" if n >= 1024 * 1024 else f"{n / 1024:g} KiB"


async def _answer(error: EnginehouseError, scope: Scope, receive: Receive, send: Send) -> None:
    response = JSONResponse(error.to_body(), status_code=error.status_code, headers=error.headers or None)
    await response(scope, receive, send)
