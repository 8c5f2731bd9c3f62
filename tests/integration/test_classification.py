"""Classification and regression end to end: a real server, real replicas, answers held to PEFT.

One classification engine (a tiny BERT with a head) carries two fine-tunes with different label
sets and a checkpoint that does not fit; one regression engine carries a fine-tune of its own.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from tests.integration.harness import ServerProcess, wait_engine, wait_for
from tests.unit.runtime.test_classification import (  # noqa: F401 - tiny_berts is a fixture
    TEXTS,
    TinyBerts,
    assert_matches,
    peft_logits,
    tiny_berts,
)
from tests.unit.runtime.test_classification_adapters import build_token_classification_adapter


@dataclass
class Setup:
    server: ServerProcess
    http: httpx.Client
    engines: dict[str, dict[str, Any]]  # engine name → engine with its deployments
    bases: dict[str, Path]  # deployment → base model directory
    adapters: dict[str, Path | None]  # deployment → adapter directory (None: the base model)

    def deployment(self, name: str) -> dict[str, Any]:
        return next(d for e in self.engines.values() for d in e["deployments"] if d["name"] == name)


def _post(http: httpx.Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = http.post(path, json=body)
    assert response.status_code == 201, response.text
    return response.json()


def _settled(http: httpx.Client, engine_id: str, expected: dict[str, str]) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        engine = http.get(f"/v1/engines/{engine_id}").json()
        statuses = {d["name"]: d["status"] for d in engine["deployments"]}
        return engine if statuses == expected else None

    return wait_for(check, timeout=120, what=f"deployments to be {expected}")


@pytest.fixture(scope="module")
def setup(start_server, tiny_berts: TinyBerts, tmp_path_factory: pytest.TempPathFactory) -> Setup:  # type: ignore[no-untyped-def]
    server = start_server()
    http = server.client()
    misfit = build_token_classification_adapter(tiny_berts.base, tmp_path_factory.mktemp("ner") / "ner")
    adapters = tiny_berts.adapters
    jobs = {
        "classification": _post(http, "/v1/training-jobs", {
            "name": "sentiment", "task_type": "classification", "base_model": str(tiny_berts.base),
            "checkpoints": [{"checkpoint": i + 1, "path": str(p)}
                            for i, p in enumerate([adapters["two"], adapters["three"], misfit])]}),
        "regression": _post(http, "/v1/training-jobs", {
            "name": "scores", "task_type": "regression", "base_model": str(tiny_berts.regression_base),
            "checkpoints": [{"checkpoint": 1, "path": str(adapters["score"])}]}),
    }
    engines = {
        "cls": _post(http, "/v1/engines", {"name": "cls", "base_model": str(tiny_berts.base),
                                           "task_type": "classification"}),
        "reg": _post(http, "/v1/engines", {"name": "reg", "base_model": str(tiny_berts.regression_base),
                                           "task_type": "regression"}),
    }
    plan = [("cls", "cls-two", "classification", 1), ("cls", "cls-three", "classification", 2),
            ("cls", "cls-ner", "classification", 3), ("reg", "reg-score", "regression", 1)]
    for engine, name, task, checkpoint in plan:
        _post(http, f"/v1/engines/{engines[engine]['id']}/deploy",
              {"name": name, "training_id": jobs[task]["id"], "checkpoint": checkpoint})
    engines = {
        "cls": _settled(http, engines["cls"]["id"], {"cls": "Deployed", "cls-two": "Deployed",
                                                     "cls-three": "Deployed", "cls-ner": "Failed"}),
        "reg": _settled(http, engines["reg"]["id"], {"reg": "Deployed", "reg-score": "Deployed"}),
    }
    bases = {name: tiny_berts.base for name in ("cls", "cls-two", "cls-three")}
    bases.update({name: tiny_berts.regression_base for name in ("reg", "reg-score")})
    deployed = {"cls": None, "cls-two": adapters["two"], "cls-three": adapters["three"], "reg": None,
                "reg-score": adapters["score"]}
    return Setup(server, http, engines, bases, deployed)


def classify(setup: Setup, model: str, text: str | list[str], **extra: Any) -> dict[str, Any]:
    response = setup.http.post("/v1/classification", json={"model": model, "input": text, **extra})
    assert response.status_code == 200, response.text
    return response.json()


def test_deployments_show_their_labels(setup: Setup, tiny_berts: TinyBerts) -> None:
    assert setup.deployment("cls-two")["metadata"]["labels"] == tiny_berts.labels["two"]
    assert setup.deployment("cls-three")["metadata"]["labels"] == tiny_berts.labels["three"]
    assert setup.deployment("reg-score")["metadata"]["labels"] == ["score"]
    assert setup.deployment("cls")["metadata"]["labels"] == ["neg", "pos"]


@pytest.mark.parametrize("model", ["cls", "cls-two", "cls-three", "reg", "reg-score"])
def test_answers_equal_peft_with_each_deployments_labels(setup: Setup, model: str) -> None:
    body = classify(setup, model, TEXTS)
    assert body["object"] == "classification" and body["model"] == model and body["id"].startswith("classify-")
    labels = setup.deployment(model)["metadata"]["labels"]
    for text, item in zip(TEXTS, body["data"]):
        assert_matches(item["logits"], labels, peft_logits(setup.bases[model], setup.adapters[model], text))
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] > len(TEXTS)


def test_probs_and_concurrent_calls_to_several_deployments(setup: Setup) -> None:
    probs = classify(setup, "cls-three", TEXTS[0], data_format="probs")["data"][0]["probs"]
    expected = peft_logits(setup.bases["cls-three"], setup.adapters["cls-three"], TEXTS[0]).softmax(-1)
    torch.testing.assert_close(torch.tensor(list(probs.values())), expected, atol=1e-5, rtol=1e-5)
    calls = [(model, text) for model in ("cls", "cls-two", "cls-three") for text in TEXTS]
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        answers = list(pool.map(lambda call: classify(setup, call[0], call[1]), calls))
    for (model, text), body in zip(calls, answers):
        expected = peft_logits(setup.bases[model], setup.adapters[model], text)
        assert_matches(body["data"][0]["logits"], setup.deployment(model)["metadata"]["labels"], expected)


def test_wrong_endpoints_name_the_classification_endpoint(setup: Setup) -> None:
    for path, body in [("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
                       ("/v1/embeddings", {"input": "hi"})]:
        response = setup.http.post(path, json={"model": "cls-two", **body})
        assert response.status_code == 400, response.text
        assert "/v1/classification" in response.json()["error"]["message"]


def test_bad_requests_are_400(setup: Setup) -> None:
    for body in [{"input": ""}, {"input": []}, {"input": "apple " * 300}, {"input": "x", "data_format": "odds"}]:
        response = setup.http.post("/v1/classification", json={"model": "cls-two", **body})
        assert response.status_code == 400, (body, response.text)
    response = setup.http.post("/v1/classification", json={"model": "reg-score", "input": "x", "data_format": "probs"})
    assert response.status_code == 400 and "regression" in response.json()["error"]["message"]


def test_a_checkpoint_that_does_not_fit_fails_alone(setup: Setup) -> None:
    failed = setup.deployment("cls-ner")
    assert "task type mismatch" in failed["status_reason"]
    assert "token-classification (NER)" in failed["status_reason"]
    engine = wait_engine(setup.http, setup.engines["cls"]["id"], "Active")
    assert {d["name"]: d["status"] for d in engine["deployments"]}["cls-two"] == "Deployed"
    response = setup.http.post("/v1/classification", json={"model": "cls-ner", "input": "hi"})
    assert response.status_code == 503 and "Failed" in response.json()["error"]["message"]
    assert classify(setup, "cls-two", "still serving")["data"][0]["logits"]
