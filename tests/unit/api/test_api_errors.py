"""The management and inference API's answers to bad input: the documented 4xx, a message a
user can act on, never a 500, and nothing changed. Engines here ask for a GPU shape this machine
cannot provide, so they stay Provisioning and no replica process starts."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from enginehouse.server import create_app
from enginehouse.settings import Settings
from tests.unit.control.conftest import fake_lora_checkpoint

KEY = "eh-test-admin"
AUTH = {"Authorization": f"Bearer {KEY}"}
PARKED = "gpu-h100-80gb"  # an option this installation cannot provide: no replica is started


@pytest.fixture()
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(data_dir=tmp_path / "data", bootstrap_key=KEY, reconcile_interval_s=0.1)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def create_engine(client: TestClient, name: str = "eng", **extra: object) -> dict:
    body = {"name": name, "base_model": "/models/base", "task_type": "text-generation",
            "deployment_option": PARKED, **extra}
    response = client.post("/v1/engines", json=body, headers=AUTH)
    assert response.status_code == 201, response.text
    return response.json()


def register_job(client: TestClient, tmp_path: Path) -> dict:
    body = {"name": "job", "task_type": "text-generation", "base_model": "/models/base",
            "checkpoints": [{"checkpoint": 1, "path": str(fake_lora_checkpoint(tmp_path / "e1"))}]}
    response = client.post("/v1/training-jobs", json=body, headers=AUTH)
    assert response.status_code == 201, response.text
    return response.json()


def error_of(response) -> dict:  # type: ignore[no-untyped-def]
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type", "code", "param"}
    return body["error"]


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"X-API-Key": "wrong"},
                                     {"Authorization": "Basic abc"}])
def test_missing_or_wrong_key_is_401(client: TestClient, headers: dict) -> None:
    for method, path in [("GET", "/v1/engines"), ("POST", "/v1/chat/completions"), ("GET", "/v1/models")]:
        response = client.request(method, path, headers=headers, json={})
        assert response.status_code == 401
        assert "API key" in error_of(response)["message"]


def test_x_api_key_header_works(client: TestClient) -> None:
    assert client.get("/v1/engines", headers={"X-API-Key": KEY}).status_code == 200


def test_unknown_task_type_is_422(client: TestClient) -> None:
    response = client.post("/v1/engines", headers=AUTH, json={
        "name": "e", "base_model": "/m", "task_type": "text-to-poetry"})
    assert response.status_code == 422
    error = error_of(response)
    assert error["param"] == "task_type" and "text-generation" in error["message"]


def test_malformed_json_is_400(client: TestClient) -> None:
    response = client.post("/v1/engines", headers={**AUTH, "Content-Type": "application/json"},
                           content=b'{"name": "e",')
    assert response.status_code == 400
    assert error_of(response)["code"] == "invalid_json"


def test_wrong_field_types_are_422_and_name_the_field(client: TestClient) -> None:
    response = client.post("/v1/engines", headers=AUTH, json={
        "name": "e", "base_model": "/m", "task_type": "text-generation", "autoscaling": {"min_replicas": "many"}})
    assert response.status_code == 422
    assert "autoscaling.min_replicas" in error_of(response)["message"]
    response = client.post("/v1/engines", headers=AUTH, json={
        "name": "e", "base_model": "/m", "task_type": "text-generation",
        "resource_management_config": {"management_type": "schedule",
                                       "management_config": {"start_time": "25:00", "end_time": "10:00"}}})
    assert response.status_code == 422
    assert "HH:MM" in error_of(response)["message"]
    assert client.get("/v1/engines", headers=AUTH).json()["data"] == []


def test_name_taken_is_409_and_changes_nothing(client: TestClient) -> None:
    first = create_engine(client)
    response = client.post("/v1/engines", headers=AUTH, json={
        "name": "eng", "base_model": "/other", "task_type": "text-generation", "deployment_option": PARKED})
    assert response.status_code == 409
    assert error_of(response)["code"] == "name_taken"
    engines = client.get("/v1/engines", headers=AUTH).json()["data"]
    assert [e["base_model"] for e in engines] == [first["base_model"]]


def test_deploy_refusals(client: TestClient, tmp_path: Path) -> None:
    engine = create_engine(client)
    job = register_job(client, tmp_path)
    deploy = f"/v1/engines/{engine['id']}/deploy"
    response = client.post(deploy, headers=AUTH, json={"name": "ft", "training_id": "tr-nope", "checkpoint": 1})
    assert response.status_code == 404 and "training job" in error_of(response)["message"]
    response = client.post(deploy, headers=AUTH, json={"name": "ft", "training_id": job["id"], "checkpoint": 9})
    assert response.status_code == 404 and "no checkpoint 9" in error_of(response)["message"]
    response = client.post(deploy, headers=AUTH, json={"name": "ft", "training_id": job["id"]})
    assert response.status_code == 422
    response = client.post(deploy, headers=AUTH, json={"name": "eng", "training_id": job["id"], "checkpoint": 1})
    assert response.status_code == 409
    response = client.post("/v1/engines/engine-nope/deploy", headers=AUTH,
                           json={"name": "ft", "training_id": job["id"], "checkpoint": 1})
    assert response.status_code == 404
    ok = client.post(deploy, headers=AUTH, json={"name": "ft", "training_id": job["id"], "checkpoint": 1})
    assert ok.status_code == 201 and ok.json()["status"] == "Pending"
    again = client.post(deploy, headers=AUTH, json={"name": "ft", "training_id": job["id"], "checkpoint": 1})
    assert again.status_code == 409


def test_checkpoint_problems_are_422_naming_the_checkpoint(client: TestClient, tmp_path: Path) -> None:
    response = client.post("/v1/training-jobs", headers=AUTH, json={
        "name": "job", "task_type": "text-generation", "base_model": "/m",
        "checkpoints": [{"checkpoint": 1, "path": str(fake_lora_checkpoint(tmp_path / "ok"))},
                        {"checkpoint": 2, "path": str(tmp_path / "missing")}]})
    assert response.status_code == 422
    error = error_of(response)
    assert "checkpoint 2" in error["message"] and error["param"] == "checkpoints[1].path"
    assert client.get("/v1/training-jobs", headers=AUTH).json()["data"] == []


def test_create_deployment_with_engine(client: TestClient, tmp_path: Path) -> None:
    job = register_job(client, tmp_path)
    response = client.post("/v1/deployments", headers=AUTH, json={
        "name": "ft", "source": {"type": "training_job", "training_id": job["id"], "checkpoint": 1},
        "engine": {"name": "new-engine", "base_model": "/models/base", "task_type": "text-generation",
                   "deployment_option": PARKED}})
    assert response.status_code == 201, response.text
    deployment = response.json()
    engine = client.get(f"/v1/engines/{deployment['engine_id']}", headers=AUTH).json()
    assert engine["name"] == "new-engine" and engine["status"] == "Provisioning"
    assert "gpu-h100-80gb" in engine["status_reason"]
    assert [d["name"] for d in engine["deployments"]] == ["ft"]


def test_create_deployment_failure_creates_no_engine(client: TestClient) -> None:
    response = client.post("/v1/deployments", headers=AUTH, json={
        "name": "ft", "source": {"type": "training_job", "training_id": "tr-nope", "checkpoint": 1},
        "engine": {"name": "new-engine", "base_model": "/m", "task_type": "text-generation"}})
    assert response.status_code == 404
    assert client.get("/v1/engines", headers=AUTH).json()["data"] == []


def test_undeploy_unknown_and_wrong_state(client: TestClient) -> None:
    engine = create_engine(client)
    response = client.post(f"/v1/engines/{engine['id']}/undeploy", headers=AUTH, json={"deployment_name": "x"})
    assert response.status_code == 404
    response = client.post(f"/v1/engines/{engine['id']}/deactivate", headers=AUTH)
    assert response.status_code == 409 and "Provisioning" in error_of(response)["message"]
    response = client.post(f"/v1/engines/{engine['id']}/reactivate", headers=AUTH)
    assert response.status_code == 409


def test_inference_errors(client: TestClient) -> None:
    chat = {"model": "nope", "messages": [{"role": "user", "content": "hi"}]}
    response = client.post("/v1/chat/completions", headers=AUTH, json=chat)
    assert response.status_code == 404 and error_of(response)["code"] == "model_not_found"
    response = client.post("/v1/chat/completions", headers=AUTH, json={**chat, "temperature": "hot"})
    assert response.status_code == 400 and error_of(response)["param"] == "temperature"
    response = client.post("/v1/completions", headers=AUTH, content=b"not json")
    assert response.status_code == 400
    response = client.post("/v1/completions", headers=AUTH, json=["a list"])
    assert response.status_code == 400


def test_no_input_yields_a_500(client: TestClient, tmp_path: Path) -> None:
    """Random and hostile bodies at every route answer 4xx."""
    engine = create_engine(client)
    routes = [("POST", "/v1/engines"), ("POST", f"/v1/engines/{engine['id']}/deploy"),
              ("POST", f"/v1/engines/{engine['id']}/undeploy"), ("POST", "/v1/deployments"),
              ("POST", "/v1/training-jobs"), ("POST", "/v1/chat/completions"),
              ("POST", "/v1/completions"), ("POST", "/v1/embeddings"),
              ("GET", "/v1/engines/%00%ff"), ("DELETE", "/v1/deployments/..%2F..")]
    samples: list[object] = [None, 0, -1, 1e308, "", "x" * 10000, [], {}, [{}], {"a": None},
                             {"name": None}, {"name": "é" * 300}, {"model": 5}, {"model": ""},
                             {"messages": [{"role": "user"}]}, {"source": {"type": "nope"}},
                             {"checkpoints": [{"checkpoint": -1, "path": ""}]}, "\x00"]
    rng = random.Random(7)
    for _ in range(40):
        samples.append({rng.choice(["name", "model", "task_type", "engine", "source", "prompt"]):
                        rng.choice(samples[:12])})
    for method, path in routes:
        for sample in samples:
            response = client.request(method, path, headers={**AUTH, "Content-Type": "application/json"},
                                      content=json.dumps(sample))
            assert 400 <= response.status_code < 500, (method, path, sample, response.text)
    engines = client.get("/v1/engines", headers=AUTH).json()["data"]
    assert [e["name"] for e in engines] == ["eng"]
