"""What management and inference bodies may hold: no NUL (or other control character) where a
path, Hub id or id belongs, numbers within sane bounds and the server's replica limit, and types
taken strictly (``"false"`` is not a boolean, ``"2"`` not a number). Each refusal is a 4xx that
names the field, and nothing is created."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from enginehouse.server import create_app
from enginehouse.settings import Settings
from tests.unit.api.test_api_errors import AUTH, KEY, PARKED, create_engine, error_of
from tests.unit.control.conftest import fake_lora_checkpoint

CEILING = 4


@pytest.fixture()
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(data_dir=tmp_path / "data", bootstrap_key=KEY, max_replicas_per_engine=CEILING)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def engine_body(**extra: object) -> dict:
    return {"name": "e", "base_model": "/models/base", "task_type": "text-generation",
            "deployment_option": PARKED, **extra}


def refused(client: TestClient, path: str, body: dict, status: int = 422) -> dict:
    response = client.post(path, json=body, headers=AUTH)
    assert response.status_code == status, response.text
    return error_of(response)


def assert_nothing_created(client: TestClient) -> None:
    for path in ("/v1/engines", "/v1/training-jobs", "/v1/deployments"):
        assert client.get(path, headers=AUTH).json()["data"] == []


@pytest.mark.parametrize("base_model", ["/models/a\x00b", "/models/a\nb", " /models/base", ""])
def test_a_base_model_no_process_could_open_is_422(client: TestClient, base_model: str) -> None:
    error = refused(client, "/v1/engines", engine_body(base_model=base_model))
    assert error["param"] == "base_model"
    job = {"name": "j", "task_type": "text-generation", "base_model": base_model,
           "checkpoints": [{"checkpoint": 1, "path": "/ckpt"}]}
    assert refused(client, "/v1/training-jobs", job)["param"] == "base_model"
    assert_nothing_created(client)


def test_a_nul_in_base_model_says_so(client: TestClient) -> None:
    error = refused(client, "/v1/engines", engine_body(base_model="/models/a\x00b"))
    assert "control characters (such as NUL" in error["message"]


@pytest.mark.parametrize(("path", "fragment"), [
    ("/ckpt/a\x00b", "control characters"),
    ("~no-such-user-3f9a/adapter", "cannot be resolved"),
    ("/tmp/" + "x" * 300 + "/adapter", "cannot be read"),
    ("x" * 5000, "at most 4096 characters"),
])
def test_a_checkpoint_path_that_cannot_be_a_path_is_422(client: TestClient, path: str, fragment: str) -> None:
    job = {"name": "j", "task_type": "text-generation", "base_model": "/models/base",
           "checkpoints": [{"checkpoint": 1, "path": path}]}
    error = refused(client, "/v1/training-jobs", job)
    assert fragment in error["message"] and "path" in str(error["param"])
    assert_nothing_created(client)


@pytest.mark.parametrize(("autoscaling", "param"), [
    ({"min_replicas": 1_000_000_000, "max_replicas": 1_000_000_000}, "autoscaling.min_replicas"),
    ({"min_replicas": 1, "max_replicas": CEILING + 1}, "autoscaling.max_replicas"),
    ({"target": 1e300}, "autoscaling.target"),
    ({"upscale_delay_s": 1e12}, "autoscaling.upscale_delay_s"),
    ({"min_replicas": "2"}, "autoscaling.min_replicas"),
    ({"min_replicas": True}, "autoscaling.min_replicas"),
    ({"min_replicas": 2.0}, "autoscaling.min_replicas"),
])
def test_autoscaling_numbers_are_bounded_and_typed(client: TestClient, autoscaling: dict, param: str) -> None:
    error = refused(client, "/v1/engines", engine_body(autoscaling=autoscaling))
    assert error["param"] == param
    assert_nothing_created(client)


def test_the_replica_limit_is_the_servers(client: TestClient) -> None:
    error = refused(client, "/v1/engines", engine_body(autoscaling={"max_replicas": CEILING + 1}))
    assert f"limit of {CEILING} replicas" in error["message"]
    assert "ENGINEHOUSE_MAX_REPLICAS_PER_ENGINE" in error["message"]
    body = {"name": "d", "source": {"type": "training_job", "training_id": "tr-x", "checkpoint": 1},
            "engine": engine_body(autoscaling={"min_replicas": CEILING + 1, "max_replicas": CEILING + 1})}
    assert refused(client, "/v1/deployments", body)["param"] == "autoscaling.min_replicas"
    assert create_engine(client, autoscaling={"min_replicas": 1, "max_replicas": CEILING})["autoscaling"]


def test_an_inactive_duration_beyond_any_use_is_422(client: TestClient) -> None:
    for duration in (1e300, 0):
        management = {"management_type": "inactive_timeout", "management_config": {"inactive_duration": duration}}
        error = refused(client, "/v1/engines", engine_body(resource_management_config=management))
        assert error["param"] == "resource_management_config.inactive_timeout.management_config.inactive_duration"


def test_infinity_is_not_a_number(client: TestClient) -> None:
    # Python's JSON parser reads the non-standard Infinity; the body must still be refused.
    raw = b'{"name": "e", "base_model": "/m", "task_type": "text-generation", "autoscaling": {"target": Infinity}}'
    response = client.post("/v1/engines", content=raw, headers={**AUTH, "Content-Type": "application/json"})
    assert response.status_code == 422 and error_of(response)["param"] == "autoscaling.target"


def test_deploy_bodies_take_ids_and_epochs_strictly(client: TestClient, tmp_path: Path) -> None:
    engine = create_engine(client)
    job = {"name": "job", "task_type": "text-generation", "base_model": "/models/base",
           "checkpoints": [{"checkpoint": 1, "path": str(fake_lora_checkpoint(tmp_path / "e1"))}]}
    job_id = client.post("/v1/training-jobs", json=job, headers=AUTH).json()["id"]
    deploy = f"/v1/engines/{engine['id']}/deploy"
    assert refused(client, deploy, {"name": "ft", "training_id": job_id, "checkpoint": "1"})["param"] == "checkpoint"
    assert refused(client, deploy, {"name": "ft", "training_id": job_id, "checkpoint": 10**30})["param"] == "checkpoint"
    assert refused(client, deploy, {"name": "ft", "training_id": "tr-\x00", "checkpoint": 1})["param"] == "training_id"
    undeploy = f"/v1/engines/{engine['id']}/undeploy"
    assert refused(client, undeploy, {"deployment_name": "a\x00b"})["param"] == "deployment_name"
    assert client.post(deploy, json={"name": "ft", "training_id": job_id, "checkpoint": 1},
                       headers=AUTH).status_code == 201


@pytest.mark.parametrize(("path", "body", "param"), [
    ("/v1/embeddings", {"input": "x", "truncate": "false"}, "truncate"),
    ("/v1/embeddings", {"input": "x", "dimensions": "8"}, "dimensions"),
    ("/v1/classification", {"input": "x", "truncate": "false"}, "truncate"),
    ("/v1/classification", {"input": "x", "truncation": 0}, "truncation"),
    ("/v1/ner", {"input": "x", "truncate": "true"}, "truncate"),
    ("/v1/detections", {"image": "x", "threshold": "0.5"}, "threshold"),
])
def test_inference_booleans_and_numbers_are_typed_strictly(client: TestClient, path: str, body: dict,
                                                          param: str) -> None:
    # The gateway validates before it looks for the model: no deployment is needed to be refused.
    error = refused(client, path, {"model": "anything", **body}, status=400)
    assert error["param"] == param
