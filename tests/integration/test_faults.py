"""Faults: permanent ones end in Failed with a reason and touch nothing else; transient ones
(a replica that dies) heal without anyone's help."""

from __future__ import annotations

import os
import signal
import shutil
from pathlib import Path

import openai
import pytest

from tests.integration.harness import replica_pid, wait_deployments, wait_engine, wait_for
from tests.integration.reference import greedy_completion
from tests.integration.test_textgen import create_engine, deploy, register_job


@pytest.fixture(scope="module")
def server(start_server):  # type: ignore[no-untyped-def]
    return start_server()


def deployment_named(engine: dict, name: str) -> dict:
    return next(d for d in engine["deployments"] if d["name"] == name)


def test_missing_base_model_fails_the_engine(server, tmp_path: Path, tiny_llama_dir: Path,  # type: ignore[no-untyped-def]
                                             tiny_adapter_dirs: list[Path]) -> None:
    http = server.client()
    missing = tmp_path / "no-such-model"
    engine = create_engine(http, "ghost", missing)
    failed = wait_engine(http, engine["id"], "Failed", timeout=120)
    assert str(missing) in failed["status_reason"]
    assert failed["replicas"] == []
    job = register_job(http, tiny_llama_dir, tiny_adapter_dirs[:1], name="ghost-job")
    refused = http.post(f"/v1/engines/{engine['id']}/deploy",
                        json={"name": "ghost-ft", "training_id": job["id"], "checkpoint": 1})
    assert refused.status_code == 409 and "Failed" in refused.json()["error"]["message"]
    assert http.delete(f"/v1/engines/{engine['id']}").status_code == 202
    wait_for(lambda: http.get(f"/v1/engines/{engine['id']}").status_code == 404, timeout=30, what="deletion")


def test_bad_adapters_fail_alone(server, tmp_path: Path, tiny_llama_dir: Path,  # type: ignore[no-untyped-def]
                                 tiny_adapter_dirs: list[Path]) -> None:
    http = server.client()
    corrupt = tmp_path / "corrupt"
    shutil.copytree(tiny_adapter_dirs[1], corrupt)
    (corrupt / "adapter_model.safetensors").write_bytes(b"\x00garbage" * 64)
    # checkpoints: 1 = r8 (over the engine's limit), 2 = r4 (fits), 3 = corrupt weights
    job = register_job(http, tiny_llama_dir, [tiny_adapter_dirs[0], tiny_adapter_dirs[1], corrupt], name="mixed")
    engine = create_engine(http, "strict", tiny_llama_dir, runtime_options={"max_lora_rank": 4})
    wait_engine(http, engine["id"], "Active")
    deploy(http, engine["id"], "strict-r8", job["id"], 1)
    deploy(http, engine["id"], "strict-r4", job["id"], 2)
    deploy(http, engine["id"], "strict-corrupt", job["id"], 3)

    def settled() -> dict | None:
        current = http.get(f"/v1/engines/{engine['id']}").json()
        statuses = {d["name"]: d["status"] for d in current["deployments"]}
        return current if statuses == {"strict": "Deployed", "strict-r8": "Failed", "strict-r4": "Deployed",
                                       "strict-corrupt": "Failed"} else None

    current = wait_for(settled, timeout=120, what="the adapters to settle")
    assert "rank 8 exceeds" in deployment_named(current, "strict-r8")["status_reason"]
    assert "max_lora_rank 4" in deployment_named(current, "strict-r8")["status_reason"]
    assert deployment_named(current, "strict-corrupt")["status_reason"]
    assert current["status"] == "Active"
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=server.api_key, max_retries=0)
    reply = client.completions.create(model="strict-r4", prompt="the cat", max_tokens=6, temperature=0)
    assert reply.choices[0].text == greedy_completion(tiny_llama_dir, tiny_adapter_dirs[1], "the cat", 6)
    with pytest.raises(openai.APIStatusError) as failed:
        client.completions.create(model="strict-r8", prompt="the cat", max_tokens=6)
    assert failed.value.status_code == 503 and "Failed" in str(failed.value)
    models = [m.id for m in client.models.list().data]
    assert "strict-r8" not in models and "strict-r4" in models


def test_base_deployment_cannot_be_removed(server, tiny_llama_dir: Path) -> None:  # type: ignore[no-untyped-def]
    http = server.client()
    engines = {e["name"]: e for e in http.get("/v1/engines").json()["data"]}
    engine = engines.get("strict") or wait_engine(http, create_engine(http, "strict", tiny_llama_dir)["id"], "Active")
    base = deployment_named(engine, "strict")
    response = http.delete(f"/v1/deployments/{base['id']}")
    assert response.status_code == 409 and "base deployment" in response.json()["error"]["message"]
    response = http.post(f"/v1/engines/{engine['id']}/undeploy", json={"deployment_name": "strict"})
    assert response.status_code == 409
    assert http.get(f"/v1/deployments/{base['id']}").json()["status"] == "Deployed"


def test_a_dead_replica_is_replaced_and_deployments_return(server, tiny_llama_dir: Path,  # type: ignore[no-untyped-def]
                                                           tiny_adapter_dirs: list[Path]) -> None:
    http = server.client()
    job = register_job(http, tiny_llama_dir, tiny_adapter_dirs[:1], name="heal-job")
    engine = create_engine(http, "phoenix", tiny_llama_dir)
    deploy(http, engine["id"], "phoenix-ft", job["id"], 1)
    engine = wait_deployments(http, engine["id"])
    old = engine["replicas"][0]
    os.kill(replica_pid(server.data_dir, old["url"]), signal.SIGKILL)

    def healed() -> dict | None:
        current = http.get(f"/v1/engines/{engine['id']}").json()
        replicas = current["replicas"]
        if len(replicas) == 1 and replicas[0]["id"] != old["id"] and \
                {d["status"] for d in current["deployments"]} == {"Deployed"}:
            return current
        return None

    current = wait_for(healed, timeout=120, what="a new replica with every deployment back")
    assert current["status"] == "Active"
    events = http.get(f"/v1/engines/{engine['id']}/events").json()["data"]
    assert [e["to"] for e in events if e["name"] == "phoenix-ft"][-2:] == ["Deploying", "Deployed"]
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=server.api_key, max_retries=0)
    reply = client.completions.create(model="phoenix-ft", prompt="the cat", max_tokens=6, temperature=0)
    assert reply.choices[0].text == greedy_completion(tiny_llama_dir, tiny_adapter_dirs[0], "the cat", 6)
