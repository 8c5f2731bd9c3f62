"""A replica's own HTTP app holds the limits the server gives it, refuses paths no file can
have, and names the allowed methods in a 405."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from enginehouse.demo.tiny_encoders import build_tiny_bert
from enginehouse.requestlimits import RequestLimits
from enginehouse.runtime.embedding.runner import EmbeddingRunner
from enginehouse.runtime.options import RuntimeOptions
from enginehouse.runtime.server import create_app


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    model_dir = build_tiny_bert(tmp_path_factory.mktemp("bert") / "base")
    runner = EmbeddingRunner(base_model=str(model_dir), served_name="emb", options=RuntimeOptions())
    runner.load()
    with TestClient(create_app(runner, RequestLimits(max_body_bytes=2048, max_json_depth=16))) as client:
        yield client


def error_of(response, status: int) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    return response.json()["error"]


def test_the_limits_given_are_the_limits_held(client: TestClient) -> None:
    too_large = client.post("/v1/embeddings", json={"model": "emb", "input": "x" * 4096})
    assert error_of(too_large, 413)["code"] == "request_too_large"
    deep = client.post("/v1/embeddings", content=b'{"model": "emb", "input": ' + b"[" * 20 + b"]" * 20 + b"}",
                       headers={"Content-Type": "application/json"})
    assert error_of(deep, 400)["code"] == "json_too_deep"
    assert client.post("/v1/embeddings", json={"model": "emb", "input": "x" * 1000}).status_code == 200


def test_an_adapter_path_with_a_nul_is_422(client: TestClient) -> None:
    error = error_of(client.put("/v1/adapters/ft", json={"path": "/models/a\x00b"}), 422)
    assert error["param"] == "path" and "NUL" in error["message"]
    assert client.get("/health").json()["serving"] == "emb"


def test_405_names_the_allowed_methods(client: TestClient) -> None:
    response = client.get("/v1/embeddings")
    assert error_of(response, 405)["code"] == "method_not_allowed"
    assert response.headers["allow"] == "POST"
    assert client.post("/v1/adapters/ft").headers["allow"] == "PUT, DELETE"
