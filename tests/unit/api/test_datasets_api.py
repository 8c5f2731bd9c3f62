"""Datasets and fine-tuning jobs over HTTP, before anything trains: uploads and their refusals
(each naming the line), the limits, organizations apart, and jobs checked and queued. The
training supervisor is stopped, so queued jobs stay Pending; training itself is tested with real
workers in tests/integration/test_fine_tuning.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from enginehouse.services import orgs
from tests.app_clients import app_client
from tests.databases import BACKENDS

KEY = "eh-datasets-admin"
AUTH = {"Authorization": f"Bearer {KEY}"}
MAX_DATASET_BYTES = 4096


@pytest.fixture(params=BACKENDS)
def client(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TestClient]:
    with app_client(request.param, tmp_path, KEY, max_dataset_bytes=MAX_DATASET_BYTES) as client:
        yield client


def _jsonl(rows: list[Any]) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


LABELLED = [{"text": f"ticket {i} about {'billing' if i % 2 else 'login'}",
             "label": "billing" if i % 2 else "login"} for i in range(20)]


def _upload(client: TestClient, content: bytes, name: str = "tickets", key: dict[str, str] = AUTH) -> httpx.Response:
    return client.post("/v1/datasets", headers=key, files={"file": ("tickets.jsonl", content)},
                       data={"name": name})


def _dataset(client: TestClient, rows: list[Any], name: str = "tickets") -> str:
    answer = _upload(client, _jsonl(rows), name)
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


def _job(client: TestClient, **fields: Any) -> httpx.Response:
    body = {"name": "tune", "task_type": "classification", "base_model": "tiny/encoder", **fields}
    return client.post("/v1/training-jobs", headers=AUTH, json=body)


def _error(answer: httpx.Response, status: int) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    return dict(answer.json()["error"])


def test_an_upload_is_stored_listed_and_deleted(client: TestClient) -> None:
    content = _jsonl(LABELLED) + b"\n   \n"  # blank lines are not rows
    answer = _upload(client, content)
    assert answer.status_code == 201, answer.text
    dataset = answer.json()
    assert dataset["id"].startswith("ds-") and dataset["object"] == "dataset"
    assert (dataset["name"], dataset["rows"], dataset["bytes"]) == ("tickets", 20, len(content))
    assert client.get(f"/v1/datasets/{dataset['id']}", headers=AUTH).json() == dataset
    listed = client.get("/v1/datasets", headers=AUTH).json()
    assert [d["id"] for d in listed["data"]] == [dataset["id"]]
    assert client.delete(f"/v1/datasets/{dataset['id']}", headers=AUTH).status_code == 202
    assert client.get(f"/v1/datasets/{dataset['id']}", headers=AUTH).status_code == 404


@pytest.mark.parametrize(("content", "words"), [
    (b"", "no rows"),
    (b"\n\n", "no rows"),
    (b'{"text": "a", "label": "x"}\n{"text": "b", "label": \n', "line 2 is not valid JSON"),
    (b'{"text": "a", "label": "x"}\n\n[1, 2]\n', "line 3 is a JSON list"),
    (b'{"text": "\xff"}\n', "line 1 is not UTF-8"),
])
def test_a_malformed_upload_is_refused_naming_the_line(client: TestClient, content: bytes, words: str) -> None:
    error = _error(_upload(client, content), 400)
    assert words in error["message"] and error["param"] == "file"
    assert client.get("/v1/datasets", headers=AUTH).json()["data"] == []


def test_uploads_past_the_limit_are_413_and_leave_nothing(client: TestClient, tmp_path: Path) -> None:
    big = _jsonl([{"text": "x" * 100, "label": "a"}] * 60)
    assert len(big) > MAX_DATASET_BYTES
    assert "ENGINEHOUSE_MAX_DATASET_BYTES" in _error(_upload(client, big), 413)["message"]
    assert client.get("/v1/datasets", headers=AUTH).json()["data"] == []
    assert not list((tmp_path / "data" / "datasets").glob("*.jsonl"))


def test_an_upload_that_is_not_multipart_or_has_no_file_is_refused(client: TestClient) -> None:
    assert "multipart/form-data" in _error(
        client.post("/v1/datasets", headers=AUTH, json={"file": "x"}), 400)["message"]
    assert "no file" in _error(client.post("/v1/datasets", headers=AUTH, data={"name": "x"},
                                           files={"other": ("a", b"1")}), 400)["message"]
    assert _error(_upload(client, _jsonl(LABELLED), name=""), 400)["param"] == "name"


def test_another_organizations_dataset_is_not_found(client: TestClient) -> None:
    dataset_id = _dataset(client, LABELLED)
    with client.app.state.database.session() as session:  # type: ignore[attr-defined]
        orgs.create_organization(session, "other")
        other = {"Authorization": f"Bearer {orgs.create_api_key(session, 'other').key}"}
    assert client.get(f"/v1/datasets/{dataset_id}", headers=other).status_code == 404
    assert client.delete(f"/v1/datasets/{dataset_id}", headers=other).status_code == 404
    assert client.get("/v1/datasets", headers=other).json()["data"] == []


def test_a_fine_tune_is_queued_with_its_parameters(client: TestClient) -> None:
    dataset_id = _dataset(client, LABELLED)
    answer = _job(client, train_dataset_id=dataset_id, parameters={"num_train_epochs": 2, "lora_r": 4})
    assert answer.status_code == 201, answer.text
    job = answer.json()
    assert (job["status"], job["progress"], job["checkpoints"]) == ("Pending", 0, [])
    assert job["train_dataset_id"] == dataset_id and job["train_test_split_ratio"] == 0.1
    assert job["parameters"]["num_train_epochs"] == 2 and job["parameters"]["learning_rate"] == 2e-4
    # Its dataset stays while it may still read it.
    assert _error(client.delete(f"/v1/datasets/{dataset_id}", headers=AUTH), 409)["code"] == "dataset_in_use"
    cancelled = client.post(f"/v1/training-jobs/{job['id']}/cancel", headers=AUTH)
    assert cancelled.status_code == 202 and cancelled.json()["status"] == "Cancelled"
    assert _error(client.post(f"/v1/training-jobs/{job['id']}/cancel", headers=AUTH), 409)["code"] == "job_ended"
    assert client.get(f"/v1/training-jobs/{job['id']}/logs", headers=AUTH).json()["data"] == []
    assert client.delete(f"/v1/datasets/{dataset_id}", headers=AUTH).status_code == 202


@pytest.mark.parametrize(("rows", "words"), [
    ([{"text": "a", "label": "x"}, {"text": "b"}], "line 2"),
    ([{"text": "a", "label": "x"}, {"text": 3, "label": "y"}], "line 2"),
])
def test_rows_that_do_not_fit_the_task_are_refused_naming_the_line(
    client: TestClient, rows: list[Any], words: str
) -> None:
    error = _error(_job(client, train_dataset_id=_dataset(client, rows)), 400)
    assert words in error["message"] and error["param"] == "train_dataset_id"
    assert client.get("/v1/training-jobs", headers=AUTH).json()["data"] == []


def test_a_test_label_never_seen_in_training_is_refused(client: TestClient) -> None:
    train = _dataset(client, LABELLED, "train")
    test = _dataset(client, [{"text": "a", "label": "login"}, {"text": "b", "label": "refund"}], "test")
    error = _error(_job(client, train_dataset_id=train, test_dataset_id=test), 400)
    assert "test line 2" in error["message"] and "refund" in error["message"]


@pytest.mark.parametrize(("fields", "status", "words"), [
    ({"train_dataset_id": "ds-missing"}, 404, "ds-missing"),
    ({"train_dataset_id": "DATASET", "parameters": {"num_train_epochs": 0}}, 422, "num_train_epochs"),
    ({"train_dataset_id": "DATASET", "parameters": {"epochs": 2}}, 422, "epochs"),
    ({"train_dataset_id": "DATASET", "train_test_split_ratio": 1.5}, 422, "train_test_split_ratio"),
    ({"train_dataset_id": "DATASET", "checkpoints": [{"checkpoint": 1, "path": "/x"}]}, 422, "not both"),
    ({}, 422, "train_dataset_id"),
    ({"train_dataset_id": "DATASET", "task_type": "embedding"}, 400, "register existing checkpoints"),
    ({"train_dataset_id": "DATASET", "task_type": "text-generation", "parameters": {"pooling": "mean"}}, 400,
     "parameters.pooling"),
])
def test_a_fine_tune_body_that_cannot_run_is_refused(
    client: TestClient, fields: dict[str, Any], status: int, words: str
) -> None:
    dataset_id = _dataset(client, LABELLED)
    fields = {k: dataset_id if v == "DATASET" else v for k, v in fields.items()}
    assert words in _error(_job(client, **fields), status)["message"]


def test_logs_tail_must_be_a_count(client: TestClient) -> None:
    job = _job(client, train_dataset_id=_dataset(client, LABELLED)).json()
    assert _error(client.get(f"/v1/training-jobs/{job['id']}/logs?tail=x", headers=AUTH), 400)["param"] == "tail"
    assert client.get("/v1/training-jobs/tr-missing/logs", headers=AUTH).status_code == 404
