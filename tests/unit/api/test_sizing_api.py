"""``deployment_option: "auto"`` through the API: the engine shows the option sizing picked, the
estimate and each of its terms; a model no option holds is a 422 naming its estimate; the
options list says what this installation can give."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from enginehouse.providers.local import LocalProvider
from enginehouse.server import create_app
from enginehouse.settings import Settings
from tests.unit.api.test_api_errors import AUTH, KEY, error_of
from tests.unit.control.model_dirs import LLAMA_3_2_1B, llama_tensors, model_dir


@pytest.fixture()
def client(tmp_path: Path) -> Iterator[TestClient]:
    # The reconciler is stopped at once, so the engines below never start a replica process; no
    # GPU is offered whatever the machine has.
    settings = Settings(data_dir=tmp_path / "data", bootstrap_key=KEY)
    provider = LocalProvider(tmp_path, find_gpus=lambda: [])
    with TestClient(create_app(settings, provider=provider), raise_server_exceptions=False) as client:
        client.app.state.reconciler.stop(stop_replicas=False)  # type: ignore[attr-defined]
        yield client


def test_auto_shows_the_estimate_in_selected_deployment_option(client: TestClient, tmp_path: Path) -> None:
    base = model_dir(tmp_path / "small", {**LLAMA_3_2_1B, "num_hidden_layers": 1},
                     llama_tensors({**LLAMA_3_2_1B, "num_hidden_layers": 1}))
    body = {"name": "small", "base_model": str(base), "task_type": "text-generation",
            "runtime_options": {"max_model_len": 256, "max_batch_size": 2, "max_loras": 1}}
    response = client.post("/v1/engines", json=body, headers=AUTH)
    assert response.status_code == 201, response.text
    selected = response.json()["selected_deployment_option"]
    assert selected["name"] == "cpu"
    estimate = selected["estimate"]
    assert set(estimate["terms"]) == {"weights", "kv_cache", "adapter_slots", "activations", "overhead"}
    assert estimate["total_bytes"] == sum(estimate["terms"].values())
    # float32 on the CPU, 2 × 1 layer × 8 KV heads × 64 × 4 bytes × 256 positions × 2 sequences
    assert estimate["terms"]["kv_cache"] == 2 * 1 * 8 * 64 * 4 * 256 * 2
    assert estimate["headroom"] == 0.1
    assert "cpu" in selected["reason"] and "estimated" in selected["reason"]
    shown = client.get(f"/v1/engines/{response.json()['id']}", headers=AUTH).json()
    assert shown["selected_deployment_option"] == selected


def test_a_model_no_option_holds_is_422(client: TestClient, tmp_path: Path) -> None:
    base = model_dir(tmp_path / "huge", LLAMA_3_2_1B, {"w": ("BF16", [2_000_000_000_000])})
    response = client.post("/v1/engines", json={"name": "huge", "base_model": str(base),
                                                "task_type": "text-generation"}, headers=AUTH)
    assert response.status_code == 422
    error = error_of(response)
    assert error["code"] == "model_too_large" and error["param"] == "base_model"
    assert "needs an estimated" in error["message"] and "GB" in error["message"]
    assert client.get("/v1/engines", headers=AUTH).json()["data"] == []


def test_the_options_list_marks_what_this_installation_can_give(client: TestClient) -> None:
    listed = client.get("/v1/deployment-options", headers=AUTH).json()["data"]
    available = {o["name"] for o in listed if o["available"]}
    assert available == {"cpu"}
    names = [o["name"] for o in listed]
    for name in ("gpu-l4-24gb", "gpu-a10g-24gb", "gpu-l40s-48gb", "gpu-a100-40gb", "gpu-a100-80gb",
                 "gpu-h100-80gb", "gpu-h100-80gb-x2", "gpu-h100-80gb-x4", "gpu-h100-80gb-x8"):
        assert name in names
    eight = next(o for o in listed if o["name"] == "gpu-h100-80gb-x8")
    assert (eight["accelerator_count"], eight["model_memory_gb"]) == (8, 640.0)
