"""Request bodies are bounded and checked before they are parsed: 413 over the size limit (from
Content-Length, or while reading a chunked body, which stops at the limit), 400 for bodies nested
too deep or holding a lone surrogate, 400 for a NUL in the URL; and 405s name what is allowed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from enginehouse.requestlimits import RequestLimitMiddleware, RequestLimits
from enginehouse.server import create_app
from enginehouse.settings import Settings
from tests.unit.api.test_api_errors import AUTH, KEY, error_of

LIMIT = 4096
JSON = {**AUTH, "Content-Type": "application/json"}


@pytest.fixture()
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(data_dir=tmp_path / "data", bootstrap_key=KEY, max_request_body_bytes=LIMIT,
                        max_json_depth=32)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def test_a_body_over_the_limit_is_413(client: TestClient) -> None:
    body = json.dumps({"model": "m", "input": "x" * LIMIT}).encode()
    for path in ("/v1/embeddings", "/v1/engines"):
        response = client.post(path, content=body, headers=JSON)
        assert response.status_code == 413
        error = error_of(response)
        assert error["code"] == "request_too_large" and "4 KiB" in error["message"]


def test_a_chunked_body_over_the_limit_is_413(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"model": "m", "input": "'
        for _ in range(8):
            yield b"x" * 1024
        yield b'"}'

    response = client.post("/v1/embeddings", content=chunks(), headers=JSON)  # no Content-Length
    assert response.status_code == 413 and error_of(response)["code"] == "request_too_large"


def test_a_body_within_the_limit_passes(client: TestClient) -> None:
    body = {"name": "e", "base_model": "/m", "task_type": "text-generation", "deployment_option": "gpu-h100-80gb"}
    assert client.post("/v1/engines", json=body, headers=AUTH).status_code == 201


@pytest.mark.parametrize("path", ["/v1/embeddings", "/v1/chat/completions", "/v1/completions", "/v1/engines",
                                  "/v1/training-jobs"])
def test_a_body_nested_too_deep_is_400(client: TestClient, path: str) -> None:
    body = b'{"model": "m", "input": ' + b"[" * 1000 + b"]" * 1000 + b"}"
    response = client.post(path, content=body, headers=JSON)
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "json_too_deep" and "32 levels" in error["message"]
    assert client.get("/health").status_code == 200


@pytest.mark.parametrize("path", ["/v1/embeddings", "/v1/chat/completions", "/v1/completions", "/v1/engines"])
def test_a_lone_surrogate_is_400(client: TestClient, path: str) -> None:
    body = b'{"model": "m", "name": "e", "base_model": "hi \\ud800", "input": "hi \\udc00"}'
    response = client.post(path, content=body, headers=JSON)
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "invalid_unicode" and "surrogate" in error["message"]


def test_a_surrogate_pair_is_text_like_any_other(client: TestClient) -> None:
    # Past the checks, the body reaches the gateway: an emoji written as a pair is fine.
    response = client.post("/v1/embeddings", content=b'{"model": "nobody", "input": "\\ud83d\\ude00"}', headers=JSON)
    assert response.status_code == 404 and error_of(response)["code"] == "model_not_found"


def test_a_nul_in_the_url_is_400(client: TestClient) -> None:
    for url in ("/v1/engines/engine-%00x", "/v1/engines?base_model=a%00b"):
        response = client.get(url, headers=AUTH)
        assert response.status_code == 400 and error_of(response)["code"] == "invalid_url"


def test_405_names_the_allowed_methods(client: TestClient) -> None:
    response = client.put("/v1/engines", headers=AUTH)
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, POST"
    error = error_of(response)
    assert error["code"] == "method_not_allowed" and "GET, POST" in error["message"]
    assert client.post("/v1/engines/engine-x", headers=AUTH).headers["allow"] == "GET, DELETE"
    assert client.get("/v1/chat/completions", headers=AUTH).headers["allow"] == "POST"


# -- the middleware on its own: what it reads, and what the app then receives ------------------


def _scope(headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {"type": "http", "method": "POST", "path": "/", "query_string": b"", "headers": headers}


def _run(middleware: RequestLimitMiddleware, scope: dict[str, Any], messages: Iterator[dict[str, Any]]
         ) -> tuple[list[dict[str, Any]], int]:
    """Run ``middleware`` on ``messages`` from the client; (what it sent back, messages it read)."""
    read = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal read
        read += 1
        return next(messages)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(middleware(scope, receive, send))
    return sent, read


def test_reading_a_chunked_body_stops_at_the_limit() -> None:
    def endless() -> Iterator[dict[str, Any]]:
        while True:
            yield {"type": "http.request", "body": b"x" * 1000, "more_body": True}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("the app must not be called")

    sent, read = _run(RequestLimitMiddleware(app, RequestLimits(LIMIT, 32)), _scope([]), endless())
    assert sent[0]["status"] == 413
    assert read == LIMIT // 1000 + 1  # the chunk that crossed the limit is the last one read


def test_a_declared_length_over_the_limit_is_refused_unread() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("the app must not be called")

    scope = _scope([(b"content-length", str(LIMIT + 1).encode())])
    sent, read = _run(RequestLimitMiddleware(app, RequestLimits(LIMIT, 32)), scope, iter([]))
    assert sent[0]["status"] == 413 and read == 0


def test_the_app_gets_the_body_whole_then_the_clients_next_message() -> None:
    seen: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(await receive())
        seen.append(await receive())  # the gateway waits for this to notice a client leaving
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    client = iter([{"type": "http.request", "body": b'{"a": ', "more_body": True},
                   {"type": "http.request", "body": b"[1]}", "more_body": False},
                   {"type": "http.disconnect"}])
    sent, _ = _run(RequestLimitMiddleware(app, RequestLimits(LIMIT, 32)), _scope([]), client)
    assert seen == [{"type": "http.request", "body": b'{"a": [1]}', "more_body": False},
                    {"type": "http.disconnect"}]
    assert sent[0]["status"] == 204
