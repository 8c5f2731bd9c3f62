"""The server's side of artifacts that travel: ``/v1/replica-artifacts`` gives a replica (known by
its secret) the files of its own engine's base model and checkpoints, by sha256, and nothing else
to anyone. The reconciler is stopped: the replica is a row, the files are real."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from enginehouse.artifacts import DigestCache
from enginehouse.replicaauth import SECRET_HEADER, ReplicaAddress
from enginehouse.services import orgs
from enginehouse.services import replicas as replica_service
from tests.app_clients import app_client
from tests.databases import BACKENDS

KEY = "eh-test-artifacts"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(params=BACKENDS)
def client(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TestClient]:
    with app_client(request.param, tmp_path, KEY, quiet=("training", "reconciler")) as client:
        yield client


def _model(directory: Path, files: dict[str, bytes]) -> Path:
    for name, content in files.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_bytes(content)
    return directory


def _engine(client: TestClient, name: str, base_model: Path, replica_id: str, secret: str) -> dict[str, Any]:
    created = client.post("/v1/engines", headers=AUTH, json={"name": name, "base_model": str(base_model),
                                                             "task_type": "text-generation"})
    assert created.status_code == 201, created.text
    with client.app.state.database.session() as session:  # type: ignore[attr-defined]
        replica_service.add_replica(session, orgs.authenticate(session, KEY), created.json()["id"], replica_id,
                                    ReplicaAddress("http://127.0.0.1:1", secret))
    return created.json()


def test_a_replica_gets_its_engines_files_by_digest(client: TestClient, tmp_path: Path) -> None:
    files = {"config.json": b'{"model_type": "llama"}', "weights/model.safetensors": b"\x00" * 3000 + b"weights"}
    base = _model(tmp_path / "base", files)
    _engine(client, "fetched", base, "replica-00000000000000a1", "secret-a")
    replica = {SECRET_HEADER: "secret-a"}
    manifest = client.get("/v1/replica-artifacts/manifest", params={"path": str(base)}, headers=replica)
    assert manifest.status_code == 200, manifest.text
    expected = [{"name": name, "size": len(content), "sha256": hashlib.sha256(content).hexdigest()}
                for name, content in sorted(files.items())]
    assert manifest.json() == {"object": "artifact.manifest", "path": str(base), "files": expected}
    for entry, content in zip(expected, [files[e["name"]] for e in expected], strict=True):
        got = client.get(f"/v1/replica-artifacts/files/{entry['sha256']}", params={"path": str(base)}, headers=replica)
        assert got.status_code == 200 and got.content == content
        assert got.headers["content-type"] == "application/octet-stream"


def test_a_large_model_is_read_in_the_background_while_the_replica_asks_again(client: TestClient,
                                                                             tmp_path: Path) -> None:
    base = _model(tmp_path / "large", {"config.json": b"{}"})
    weights = base / "model.safetensors"
    with open(weights, "wb") as handle:  # sparse: 256 MB to read, nothing on disk
        handle.truncate(256 * 2**20)
    _engine(client, "large", base, "replica-00000000000000c1", "secret-c")
    client.app.state.artifact_digests = DigestCache(wait_s=0)  # type: ignore[attr-defined]
    replica, params = {SECRET_HEADER: "secret-c"}, {"path": str(base)}
    first = client.get("/v1/replica-artifacts/manifest", params=params, headers=replica)
    assert first.status_code == 503, first.text
    error = first.json()["error"]
    assert error["code"] == "artifact_preparing" and "0.3 GB read" in error["message"]
    assert int(first.headers["retry-after"]) > 0
    deadline = time.monotonic() + 60
    answer = first
    while answer.status_code == 503 and time.monotonic() < deadline:
        time.sleep(0.1)  # the reading goes on between requests, not inside them
        answer = client.get("/v1/replica-artifacts/manifest", params=params, headers=replica)
    assert answer.status_code == 200, answer.text
    digests = {entry["name"]: entry["sha256"] for entry in answer.json()["files"]}
    assert digests["model.safetensors"] == hashlib.sha256(bytes(256 * 2**20)).hexdigest()


def test_a_file_asked_for_before_its_manifest_waits_for_the_same_background_reading(
        client: TestClient, tmp_path: Path) -> None:
    config = b'{"asked": "first"}'
    base = _model(tmp_path / "unread", {"config.json": config})
    with open(base / "model.safetensors", "wb") as handle:  # sparse: 256 MB to read, nothing on disk
        handle.truncate(256 * 2**20)
    _engine(client, "unread", base, "replica-00000000000000d1", "secret-d")
    client.app.state.artifact_digests = DigestCache(wait_s=0)  # type: ignore[attr-defined]
    replica, params = {SECRET_HEADER: "secret-d"}, {"path": str(base)}
    route = f"/v1/replica-artifacts/files/{hashlib.sha256(config).hexdigest()}"
    first = client.get(route, params=params, headers=replica)
    assert first.status_code == 503, first.text
    assert first.json()["error"]["code"] == "artifact_preparing" and int(first.headers["retry-after"]) > 0
    deadline = time.monotonic() + 60
    answer = first
    while answer.status_code == 503 and time.monotonic() < deadline:
        time.sleep(0.1)
        answer = client.get(route, params=params, headers=replica)
    assert answer.status_code == 200 and answer.content == config


def test_nothing_for_anyone_else(client: TestClient, tmp_path: Path) -> None:
    mine = _model(tmp_path / "mine", {"config.json": b"{}"})
    theirs = _model(tmp_path / "theirs", {"config.json": b"{}"})
    _engine(client, "mine", mine, "replica-00000000000000b1", "secret-b1")
    _engine(client, "theirs", theirs, "replica-00000000000000b2", "secret-b2")
    digest = hashlib.sha256(b"{}").hexdigest()
    for headers, path, status in [
        ({}, mine, 401),  # no secret
        (AUTH, mine, 401),  # a user's key is not a replica's secret
        ({SECRET_HEADER: "guessed"}, mine, 401),
        ({SECRET_HEADER: "secret-b1"}, theirs, 404),  # another engine's model
        ({SECRET_HEADER: "secret-b1"}, tmp_path, 404),  # any other directory
        ({SECRET_HEADER: "secret-b1"}, Path("/etc"), 404),
    ]:
        for route in ("/v1/replica-artifacts/manifest", f"/v1/replica-artifacts/files/{digest}"):
            answer = client.get(route, params={"path": str(path)}, headers=headers)
            assert answer.status_code == status, (route, headers, path, answer.text)
    mine_only = {SECRET_HEADER: "secret-b1"}
    bad_digest = client.get("/v1/replica-artifacts/files/abc", params={"path": str(mine)}, headers=mine_only)
    assert bad_digest.status_code == 400 and bad_digest.json()["error"]["param"] == "sha256"
    unknown = client.get(f"/v1/replica-artifacts/files/{'0' * 64}", params={"path": str(mine)}, headers=mine_only)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "artifact_not_found"
