"""The server's side of a fine-tuning job's files on a Ray node: ``/v1/training-artifacts/{job_id}``
gives the holder of the job's own secret the files its launch named (a model directory, a dataset
file), by sha256, and nothing else to anyone: not another job's, not with a user's key or a
replica's secret, not after the job is released."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from enginehouse.artifact_grants import job_directory, revoke_grant, write_grant
from enginehouse.replicaauth import SECRET_HEADER
from tests.app_clients import app_client

KEY = "eh-test-training-artifacts"
AUTH = {"Authorization": f"Bearer {KEY}"}
MODEL = {"config.json": b'{"model_type": "llama"}', "weights/model.safetensors": b"\x01" * 2000}
DATASET = b'{"prompt": "a", "completion": "b"}\n'


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    # SQLite alone: grants live in the data directory, not the database.
    with app_client("sqlite", tmp_path, KEY, quiet=("training", "reconciler")) as client:
        yield client


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path, Path]:
    model = tmp_path / "model"
    for name, content in MODEL.items():
        (model / name).parent.mkdir(parents=True, exist_ok=True)
        (model / name).write_bytes(content)
    dataset = tmp_path / "ds-1.jsonl"
    dataset.write_bytes(DATASET)
    other = tmp_path / "other.jsonl"
    other.write_bytes(b"{}\n")
    return model, dataset, other


def _grant(client: TestClient, job_id: str, secret: str, paths: list[Path]) -> Path:
    job_dir = job_directory(client.app.state.settings.data_dir / "training", job_id)  # type: ignore[attr-defined]
    assert job_dir is not None
    write_grant(job_dir, secret, [str(p) for p in paths])
    return job_dir


def _sha(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def test_a_job_gets_its_model_and_dataset_by_digest(client: TestClient, files: tuple[Path, Path, Path]) -> None:
    model, dataset, _ = files
    job_dir = _grant(client, "tr-aaaa", "job-secret", [model, dataset])
    assert (job_dir / "artifact-grant.json").stat().st_mode & 0o777 == 0o600
    assert "job-secret" not in (job_dir / "artifact-grant.json").read_text()  # only its digest is kept
    mine = {SECRET_HEADER: "job-secret"}
    manifest = client.get("/v1/training-artifacts/tr-aaaa/manifest", params={"path": str(model)}, headers=mine)
    assert manifest.status_code == 200, manifest.text
    assert manifest.json()["files"] == [{"name": n, "size": len(c), "sha256": _sha(c)} for n, c in sorted(MODEL.items())]
    # A dataset is one file: its manifest is that file, under its own name.
    one = client.get("/v1/training-artifacts/tr-aaaa/manifest", params={"path": str(dataset)}, headers=mine)
    assert one.json()["files"] == [{"name": "ds-1.jsonl", "size": len(DATASET), "sha256": _sha(DATASET)}]
    got = client.get(f"/v1/training-artifacts/tr-aaaa/files/{_sha(DATASET)}", params={"path": str(dataset)},
                     headers=mine)
    assert got.status_code == 200 and got.content == DATASET
    weights = MODEL["weights/model.safetensors"]
    got = client.get(f"/v1/training-artifacts/tr-aaaa/files/{_sha(weights)}", params={"path": str(model)},
                     headers=mine)
    assert got.status_code == 200 and got.content == weights


def test_nothing_for_anyone_else(client: TestClient, files: tuple[Path, Path, Path], tmp_path: Path) -> None:
    model, dataset, other = files
    _grant(client, "tr-aaaa", "secret-a", [model, dataset])
    _grant(client, "tr-bbbb", "secret-b", [other])
    digest = _sha(DATASET)
    for job_id, headers, path, status in [
        ("tr-aaaa", {}, dataset, 401),  # no secret
        ("tr-aaaa", AUTH, dataset, 401),  # a user's key is not the job's secret
        ("tr-aaaa", {SECRET_HEADER: "guessed"}, dataset, 401),
        ("tr-aaaa", {SECRET_HEADER: "secret-b"}, dataset, 401),  # another job's secret
        ("tr-bbbb", {SECRET_HEADER: "secret-a"}, other, 401),
        ("tr-cccc", {SECRET_HEADER: "secret-a"}, dataset, 401),  # no such job
        ("%2E%2E", {SECRET_HEADER: "secret-a"}, dataset, 401),  # "..", escaped so the client keeps it
        ("tr-aaaa", {SECRET_HEADER: "secret-a"}, other, 404),  # another job's file
        ("tr-aaaa", {SECRET_HEADER: "secret-a"}, tmp_path, 404),  # any other path
        ("tr-aaaa", {SECRET_HEADER: "secret-a"}, Path("/etc/passwd"), 404),
    ]:
        for route in (f"/v1/training-artifacts/{job_id}/manifest", f"/v1/training-artifacts/{job_id}/files/{digest}"):
            answer = client.get(route, params={"path": str(path)}, headers=headers)
            assert answer.status_code == status, (route, headers, answer.text)
    # A replica's routes know nothing of a job's secret.
    assert client.get("/v1/replica-artifacts/manifest", params={"path": str(model)},
                      headers={SECRET_HEADER: "secret-a"}).status_code == 401
    bad = client.get("/v1/training-artifacts/tr-aaaa/files/abc", params={"path": str(dataset)},
                     headers={SECRET_HEADER: "secret-a"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_digest"


def test_a_released_jobs_secret_opens_nothing(client: TestClient, files: tuple[Path, Path, Path]) -> None:
    _model, dataset, _ = files
    job_dir = _grant(client, "tr-aaaa", "secret-a", [dataset])
    route, params = "/v1/training-artifacts/tr-aaaa/manifest", {"path": str(dataset)}
    assert client.get(route, params=params, headers={SECRET_HEADER: "secret-a"}).status_code == 200
    revoke_grant(job_dir)
    refused = client.get(route, params=params, headers={SECRET_HEADER: "secret-a"})
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "training_secret_refused"
