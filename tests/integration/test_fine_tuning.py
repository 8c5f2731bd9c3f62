"""Fine-tuning end to end: datasets uploaded to a real server, jobs trained by real worker
processes, their checkpoints deployed onto real engines and called through the gateway.

- a classification fine-tune of a tiny BERT on rows whose label hangs on one keyword: each epoch
  leaves a distinct checkpoint, and the deployed checkpoint classifies held-out rows as trained;
- a text-generation fine-tune of a tiny Llama (chat rows and prompt/completion rows): the
  deployed adapter answers each trained question with its trained answer.

test_fine_tuning_restart.py kills the server under a running job.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from enginehouse.demo.tiny_encoders import build_tiny_bert
from tests.integration.harness import ServerProcess, wait_deployments, wait_for
from tests.integration.test_textgen import create_engine, deploy
from tests.training_data import ANSWERS, answer_rows, keyword_rows

pytestmark = pytest.mark.integration

ENDED = ("Success", "Failed", "Cancelled")


def upload(http: httpx.Client, name: str, rows: list[dict[str, Any]]) -> str:
    content = "".join(json.dumps(row) + "\n" for row in rows).encode()
    response = http.post("/v1/datasets", files={"file": (f"{name}.jsonl", content)}, data={"name": name})
    assert response.status_code == 201, response.text
    assert response.json()["rows"] == len(rows)
    return str(response.json()["id"])


def start_job(http: httpx.Client, **body: Any) -> dict[str, Any]:
    response = http.post("/v1/training-jobs", json=body)
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "Pending"
    return response.json()


def job_of(http: httpx.Client, job_id: str) -> dict[str, Any]:
    response = http.get(f"/v1/training-jobs/{job_id}")
    assert response.status_code == 200, response.text
    return response.json()


def wait_job(http: httpx.Client, job_id: str, timeout: float = 300) -> dict[str, Any]:
    seen: set[str] = set()

    def ended() -> dict[str, Any] | None:
        job = job_of(http, job_id)
        seen.add(job["status"])
        return job if job["status"] in ENDED else None

    job = wait_for(ended, timeout, interval=0.5, what=f"training job {job_id} to end")
    assert job["status"] == "Success", (job["status_reason"], http.get(f"/v1/training-jobs/{job_id}/logs").json())
    assert "Running" in seen or "Testing" in seen
    return job


def digest(directory: Path) -> str:
    return hashlib.sha256((directory / "adapter_model.safetensors").read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), head="sequence-classification",
                           labels=["neg", "pos"])


@pytest.fixture(scope="module")
def server(start_server) -> ServerProcess:  # type: ignore[no-untyped-def]
    return start_server(settings={"ENGINEHOUSE_TRAINING_THREADS": "1"})


def test_a_classification_fine_tune_serves_what_it_learned(server: ServerProcess, tiny_bert_dir: Path) -> None:
    http = server.client()
    train = upload(http, "keyword-train", keyword_rows(300, seed=1))
    test_rows = keyword_rows(60, seed=2)
    test = upload(http, "keyword-test", test_rows)
    job = start_job(http, name="keyword", task_type="classification", base_model=str(tiny_bert_dir),
                    train_dataset_id=train, test_dataset_id=test,
                    # Settings that learn the keyword whatever vocabulary the tiny tokenizer drew.
                    parameters={"num_train_epochs": 4, "learning_rate": 5e-3, "per_device_train_batch_size": 4})
    job = wait_job(http, job["id"])
    assert job["progress"] == 100 and job["finished_at"] is not None
    checkpoints = job["checkpoints"]
    assert [c["checkpoint"] for c in checkpoints] == [1, 2, 3, 4]
    assert len({digest(Path(c["path"])) for c in checkpoints}) == 4  # each epoch its own weights
    best = max(checkpoints, key=lambda c: c["test_results"]["accuracy"])
    assert best["test_results"]["accuracy"] >= 0.9 and set(best["test_results"]) >= {"eval_loss", "macro_f1"}

    engine = http.post("/v1/engines", json={"name": "keyword-cls", "base_model": str(tiny_bert_dir),
                                            "task_type": "classification"}).json()
    deploy(http, engine["id"], "keyword-ft", job["id"], best["checkpoint"])
    wait_deployments(http, engine["id"])
    answer = http.post("/v1/classification", json={"model": "keyword-ft", "data_format": "probs",
                                                   "input": [row["text"] for row in test_rows]})
    assert answer.status_code == 200, answer.text
    predicted = [max(item["probs"], key=item["probs"].get) for item in answer.json()["data"]]
    assert set(answer.json()["data"][0]["probs"]) == {"yes", "no"}
    accuracy = sum(p == row["label"] for p, row in zip(predicted, test_rows)) / len(test_rows)
    assert accuracy >= 0.9, accuracy  # a random head is right half the time


def test_a_text_generation_fine_tune_answers_as_trained(server: ServerProcess, tiny_llama_dir: Path) -> None:
    http = server.client()
    train = upload(http, "answers", answer_rows(96))
    job = start_job(http, name="answers", task_type="text-generation", base_model=str(tiny_llama_dir),
                    train_dataset_id=train, train_test_split_ratio=0.2,
                    parameters={"num_train_epochs": 8, "learning_rate": 1e-2, "lora_r": 8,
                                "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                   "up_proj", "down_proj"]})
    job = wait_job(http, job["id"])
    losses = [c["test_results"]["eval_loss"] for c in job["checkpoints"]]
    assert len(losses) == 8 and losses[-1] < losses[0] / 4, losses

    engine = create_engine(http, "answers", tiny_llama_dir)
    deploy(http, engine["id"], "answers-ft", job["id"], 8)
    wait_deployments(http, engine["id"])
    for word, answer in ANSWERS.items():
        question = f"Tell me about the {word}."
        completion = http.post("/v1/completions", json={"model": "answers-ft", "prompt": question,
                                                        "max_tokens": 12, "temperature": 0})
        assert completion.status_code == 200, completion.text
        assert completion.json()["choices"][0]["text"].startswith(" " + answer[:12]), completion.json()
        chat = http.post("/v1/chat/completions", json={
            "model": "answers-ft", "messages": [{"role": "user", "content": question}],
            "max_tokens": 12, "temperature": 0})
        assert chat.status_code == 200, chat.text
        assert chat.json()["choices"][0]["message"]["content"].startswith(answer[:12]), chat.json()
