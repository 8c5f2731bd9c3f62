"""A replica built with a secret answers only calls that carry it: every route, health, metrics and
the adapter endpoints included; the refusal is a 401 in the error envelope, before any body is read,
and never repeats what the caller sent."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from enginehouse.demo.tiny_encoders import build_tiny_bert
from enginehouse.replicaauth import SECRET_HEADER, ReplicaAddress, ReplicaSecretMiddleware
from enginehouse.requestlimits import RequestLimits
from enginehouse.runtime.embedding.runner import EmbeddingRunner
from enginehouse.runtime.options import RuntimeOptions
from enginehouse.runtime.server import create_app

SECRET = "the-replicas-own-secret"
RIGHT = {SECRET_HEADER: SECRET}


@pytest.fixture(scope="module")
def fine_tune(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("ft") / "ft", seed=1)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    model_dir = build_tiny_bert(tmp_path_factory.mktemp("bert") / "base")
    runner = EmbeddingRunner(base_model=str(model_dir), served_name="emb", options=RuntimeOptions())
    runner.load()
    app = create_app(runner, RequestLimits(max_body_bytes=4096, max_json_depth=16), secret=SECRET)
    with TestClient(app) as client:
        yield client


def _calls(fine_tune: Path) -> list[tuple[str, str, dict | None]]:
    return [
        ("GET", "/health", None),
        ("GET", "/metrics", None),
        ("GET", "/v1/models", None),
        ("POST", "/v1/embeddings", {"model": "emb", "input": "hello"}),
        ("PUT", "/v1/adapters/ft", {"path": str(fine_tune)}),
        ("DELETE", "/v1/adapters/ft", None),
    ]


@pytest.mark.parametrize("headers", [{}, {SECRET_HEADER: "guessed"}, {SECRET_HEADER: ""},
                                     {SECRET_HEADER.lower(): SECRET[:-1]}])
def test_a_call_without_the_right_secret_is_refused(client: TestClient, fine_tune: Path,
                                                    headers: dict[str, str]) -> None:
    for method, path, body in _calls(fine_tune):
        response = client.request(method, path, json=body, headers=headers)
        assert response.status_code == 401, (method, path, response.text)
        error = response.json()["error"]
        assert error["type"] == "authentication_error" and error["code"] == "replica_secret_refused"
        assert SECRET_HEADER in error["message"]
        for value in headers.values():
            assert not value or value not in response.text  # what was sent is never repeated
    # Refused before anything else is looked at: no adapter was loaded, no route matched.
    assert client.get("/health", headers=RIGHT).json()["adapters"] == {}
    assert client.get("/no/such/route").status_code == 401


def test_a_refused_caller_cannot_make_the_replica_read_its_body(client: TestClient) -> None:
    too_large = {"model": "emb", "input": "x" * 8192}
    assert client.post("/v1/embeddings", json=too_large).status_code == 401
    assert client.post("/v1/embeddings", json=too_large, headers=RIGHT).status_code == 413


def test_the_secret_twice_is_refused(client: TestClient) -> None:
    # Two values are no one value: a proxy that added its own must not let a guess through.
    headers = [(SECRET_HEADER, SECRET), (SECRET_HEADER, "guessed")]
    assert client.get("/health", headers=headers).status_code == 401  # type: ignore[arg-type]


def test_a_call_with_its_secret_is_served(client: TestClient, fine_tune: Path) -> None:
    health = client.get("/health", headers=RIGHT)
    assert health.status_code == 200 and health.json()["status"] == "ready"
    embedded = client.post("/v1/embeddings", json={"model": "emb", "input": "hello"}, headers=RIGHT)
    assert embedded.status_code == 200 and len(embedded.json()["data"]) == 1
    loaded = client.put("/v1/adapters/ft", json={"path": str(fine_tune)}, headers=RIGHT)
    assert loaded.status_code == 200 and loaded.json()["status"] == "loaded"
    assert client.delete("/v1/adapters/ft", headers=RIGHT).status_code == 200
    assert client.get("/metrics", headers=RIGHT).status_code == 200


def test_an_empty_secret_is_no_secret() -> None:
    async def app(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        raise AssertionError("never reached")

    with pytest.raises(ValueError):
        ReplicaSecretMiddleware(app, "")


def test_an_address_never_shows_its_secret() -> None:
    address = ReplicaAddress("http://127.0.0.1:9", "s3cr3t-value")
    assert "s3cr3t-value" not in repr(address)
    assert address.headers() == {SECRET_HEADER: "s3cr3t-value"}
    assert address.headers() is address.headers()  # made once, not on every call
    with pytest.raises(TypeError):
        address.headers()[SECRET_HEADER] = "changed"  # type: ignore[index]  # shared: read-only
    # A replica launched before replicas had secrets checks none: it is sent none.
    assert ReplicaAddress("http://127.0.0.1:9").headers() == {}
