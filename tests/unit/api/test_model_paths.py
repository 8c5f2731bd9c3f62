"""A base model given as a path is kept as its absolute path, so that a replica or training job on
another node (which fetches the server's files by that path) and a server started from another
directory read the same directory; a Hub id is kept as given; lists filter by either form."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from enginehouse.core.model_names import kept_model_name
from tests.app_clients import app_client

KEY = "eh-test-model-paths"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    (tmp_path / "models" / "tiny").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    with app_client("sqlite", tmp_path, KEY, quiet=("training", "reconciler")) as client:
        yield client


def test_kept_model_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "org" / "local").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert kept_model_name("./models/x") == str(tmp_path / "models" / "x")  # need not exist yet
    assert kept_model_name("../up") == str(tmp_path.parent / "up")
    assert kept_model_name("~/models/x") == str(tmp_path / "home" / "models" / "x")
    assert kept_model_name("/srv/a/../b") == "/srv/b"
    assert kept_model_name("org/local") == str(tmp_path / "org" / "local")  # a directory here, as loaders take it
    assert kept_model_name("org/remote") == "org/remote"  # a Hub id
    assert kept_model_name("gpt2") == "gpt2"
    assert kept_model_name("~no-such-user-here/x") == "~no-such-user-here/x"  # loading it says why


def test_an_engine_keeps_its_base_models_absolute_path(client: TestClient, tmp_path: Path) -> None:
    absolute = str(tmp_path / "models" / "tiny")
    for name, given in (("relative", "./models/tiny"), ("bare", "models/tiny"), ("hub", "org/remote-model")):
        created = client.post("/v1/engines", headers=AUTH, json={"name": name, "base_model": given,
                                                                 "task_type": "text-generation"})
        assert created.status_code == 201, created.text
        assert created.json()["base_model"] == (given if name == "hub" else absolute)
    for asked in ("./models/tiny", "models/tiny", absolute):
        listed = client.get("/v1/engines", headers=AUTH, params={"base_model": asked}).json()["data"]
        assert sorted(e["name"] for e in listed) == ["bare", "relative"], asked
    hub = client.get("/v1/engines", headers=AUTH, params={"base_model": "org/remote-model"}).json()["data"]
    assert [e["name"] for e in hub] == ["hub"]


def test_a_training_jobs_base_model_is_kept_the_same_way(client: TestClient, tmp_path: Path) -> None:
    checkpoint = tmp_path / "adapter"
    checkpoint.mkdir()
    (checkpoint / "adapter_config.json").write_text('{"peft_type": "LORA"}')
    (checkpoint / "adapter_model.safetensors").write_bytes(b"")
    created = client.post("/v1/training-jobs", headers=AUTH, json={
        "name": "registered", "task_type": "text-generation", "base_model": "./models/tiny",
        "checkpoints": [{"checkpoint": 1, "path": str(checkpoint)}]})
    assert created.status_code == 201, created.text
    assert created.json()["base_model"] == str(tmp_path / "models" / "tiny")
    listed = client.get("/v1/training-jobs", headers=AUTH, params={"base_model": "./models/tiny"}).json()["data"]
    assert [job["name"] for job in listed] == ["registered"]
