"""Classification and regression replicas in-process: outputs equal PEFT's own, rows of several
deployments in one forward, labels per deployment, request validation.

The builders and the PEFT reference here are shared with ``test_classification_adapters.py`` and
the integration test.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import pytest
import torch
from fastapi.testclient import TestClient
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from enginehouse.demo.tiny_encoders import build_tiny_bert
from enginehouse.runtime.classify.batcher import ClassifyRequest
from enginehouse.runtime.classify.runner import ClassificationRunner, RegressionRunner
from enginehouse.runtime.options import RuntimeOptions
from enginehouse.runtime.server import create_app

TEXTS = ["the engine serves requests quickly.", "hello", "every adapter remembers the base weights once."]


def build_classifier_adapter(
    base_dir: Path,
    out_dir: Path,
    labels: Sequence[str],
    *,
    seed: int,
    problem_type: str | None = None,
    r: int = 4,
    target_modules: Sequence[str] = ("query", "value"),
    with_head: bool = True,
) -> Path:
    """A PEFT LoRA adapter for sequence classification as a user's training leaves it: LoRA on
    ``target_modules``, the head in modules_to_save (PEFT's SEQ_CLS does that), random non-zero
    weights, and the model's config.json (labels, problem_type) beside it."""
    from peft import LoraConfig, get_peft_model

    id2label = dict(enumerate(labels))
    model = AutoModelForSequenceClassification.from_pretrained(
        str(base_dir), num_labels=len(labels), id2label=id2label,
        label2id={label: i for i, label in id2label.items()}, problem_type=problem_type,
        ignore_mismatched_sizes=True, dtype=torch.float32,
    )
    torch.manual_seed(seed)
    config = LoraConfig(r=r, lora_alpha=2 * r, target_modules=list(target_modules), lora_dropout=0.0,
                        init_lora_weights=False, task_type="SEQ_CLS" if with_head else None)
    peft_model = get_peft_model(model, config)
    with torch.no_grad():  # a head that looks trained: clearly different for every adapter
        for name, param in peft_model.named_parameters():
            if "modules_to_save" in name:
                param.normal_(0.0, 0.5)
    peft_model.save_pretrained(str(out_dir))
    model.config.save_pretrained(str(out_dir))
    return out_dir


@lru_cache(maxsize=16)
def _reference(base_dir: str, adapter_dir: str | None) -> torch.nn.Module:
    from peft import PeftModel

    kwargs: dict[str, Any] = {}
    if adapter_dir is not None:
        config = json.loads((Path(adapter_dir) / "config.json").read_text())
        id2label = {int(k): v for k, v in config["id2label"].items()}
        kwargs = {"num_labels": len(id2label), "id2label": id2label, "problem_type": config.get("problem_type"),
                  "ignore_mismatched_sizes": True}
    model = AutoModelForSequenceClassification.from_pretrained(base_dir, dtype=torch.float32, **kwargs)
    if adapter_dir is not None:
        model = PeftModel.from_pretrained(model, adapter_dir)
    return model.eval()


def peft_logits(base_dir: Path, adapter_dir: Path | None, text: str, max_length: int | None = None) -> torch.Tensor:
    """PEFT's own logits for one unpadded input (the reference every answer is held to)."""
    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    truncation = {"truncation": True, "max_length": max_length} if max_length else {}
    encoded = tokenizer(text, return_tensors="pt", **truncation)
    with torch.inference_mode():
        return _reference(str(base_dir), str(adapter_dir) if adapter_dir else None)(**encoded).logits[0]


def assert_matches(scores: dict[str, float], labels: Sequence[str], expected: torch.Tensor) -> None:
    assert list(scores) == list(labels)
    torch.testing.assert_close(torch.tensor(list(scores.values())), expected, atol=1e-5, rtol=1e-5)


@dataclass(frozen=True)
class TinyBerts:
    base: Path  # a sequence-classification head: neg, pos
    bare: Path  # a BertModel: no head
    regression_base: Path  # one output, problem_type regression
    adapters: dict[str, Path]
    labels: dict[str, list[str]]


@pytest.fixture(scope="session")
def tiny_berts(tmp_path_factory: pytest.TempPathFactory) -> TinyBerts:
    root = tmp_path_factory.mktemp("tiny-berts")
    base = build_tiny_bert(root / "base", head="sequence-classification", labels=["neg", "pos"])
    bare = build_tiny_bert(root / "bare", head="none")
    regression_base = build_tiny_bert(root / "regression", head="sequence-classification", labels=["score"],
                                      problem_type="regression", seed=3)
    labels = {"two": ["no", "yes"], "three": ["red", "green", "blue"], "multi": ["x", "y", "z"], "score": ["score"]}
    adapters = {
        "two": build_classifier_adapter(base, root / "two", labels["two"], seed=1),
        "three": build_classifier_adapter(base, root / "three", labels["three"], seed=2, r=8,
                                          target_modules=("query", "key", "value", "dense")),
        "multi": build_classifier_adapter(base, root / "multi", labels["multi"], seed=3,
                                          problem_type="multi_label_classification"),
        "score": build_classifier_adapter(regression_base, root / "score", labels["score"], seed=4,
                                          problem_type="regression"),
    }
    return TinyBerts(base, bare, regression_base, adapters, labels)


def make_runner(base_dir: Path, runner_cls: type[ClassificationRunner] = ClassificationRunner,
                **options: Any) -> ClassificationRunner:
    runner = runner_cls(base_model=str(base_dir), served_name="tiny", options=RuntimeOptions(**options))
    runner.load()
    return runner


@pytest.fixture(scope="module")
def client(tiny_berts: TinyBerts) -> Iterator[TestClient]:
    runner = make_runner(tiny_berts.base, max_model_len=32)
    with TestClient(create_app(runner)) as test_client:
        for name in ("two", "three", "multi"):
            response = test_client.put(f"/v1/adapters/{name}", json={"path": str(tiny_berts.adapters[name])})
            assert response.status_code == 200, response.text
            assert response.json()["labels"] == tiny_berts.labels[name]
        yield test_client


def classify(client: TestClient, model: str, text: str | list[str], **extra: Any) -> dict[str, Any]:
    response = client.post("/v1/classification", json={"model": model, "input": text, **extra})
    assert response.status_code == 200, response.text
    return response.json()


def error_of(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    return response.json()["error"]


@pytest.mark.parametrize("model", ["tiny", "two", "three", "multi"])
def test_logits_equal_peft_with_the_deployments_labels(client: TestClient, tiny_berts: TinyBerts, model: str) -> None:
    adapter = tiny_berts.adapters.get(model)
    labels = tiny_berts.labels.get(model, ["neg", "pos"])
    body = classify(client, model, TEXTS)
    assert body["object"] == "classification" and body["id"].startswith("classify-") and body["model"] == model
    assert [item["index"] for item in body["data"]] == [0, 1, 2]
    for text, item in zip(TEXTS, body["data"]):
        assert set(item) == {"index", "logits"}
        assert_matches(item["logits"], labels, peft_logits(tiny_berts.base, adapter, text))
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_berts.base))
    tokens = sum(len(tokenizer(t)["input_ids"]) for t in TEXTS)
    assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}


def test_probs_are_softmax_or_sigmoid_by_problem_type(client: TestClient) -> None:
    for model, link in [("three", lambda t: t.softmax(-1)), ("multi", torch.sigmoid)]:
        logits = classify(client, model, TEXTS[0])["data"][0]["logits"]
        probs = classify(client, model, TEXTS[0], data_format="probs")["data"][0]["probs"]
        assert list(probs) == list(logits)
        torch.testing.assert_close(torch.tensor(list(probs.values())), link(torch.tensor(list(logits.values()))))
    single = classify(client, "three", TEXTS[0], data_format="probs")["data"][0]["probs"]
    assert sum(single.values()) == pytest.approx(1.0, abs=1e-5)


def test_one_forward_mixes_deployments_each_row_with_its_own_head(tiny_berts: TinyBerts) -> None:
    runner = make_runner(tiny_berts.base)  # not started: the test steps the batcher itself
    for name in ("two", "three"):
        runner.load_adapter(name, str(tiny_berts.adapters[name]))
    def encode(text: str) -> list[int]:
        return list(runner.serving.tokenizers.inline(text)["input_ids"])

    requests = {}
    for model in ["three", "tiny", "two", "three"]:
        handle, spec = _resolve(runner, model)
        request = ClassifyRequest([encode(t) for t in TEXTS[:2]], handle, spec)
        runner.batcher.submit(request)
        requests[len(requests)] = (model, request)
    assert runner.batcher.step() is True
    for model, request in requests.values():
        assert request.future.done(), "every row ran in the one forward"
        logits = request.future.result()
        for row, text in enumerate(TEXTS[:2]):
            expected = peft_logits(tiny_berts.base, tiny_berts.adapters.get(model), text)
            torch.testing.assert_close(logits[row], expected, atol=1e-5, rtol=1e-5)
    assert runner.batcher.step() is False


def test_a_batch_holds_at_most_max_loras_adapters(tiny_berts: TinyBerts) -> None:
    runner = make_runner(tiny_berts.base, max_loras=1)
    for name in ("two", "three"):
        runner.load_adapter(name, str(tiny_berts.adapters[name]))
    requests = []
    for model in ["two", "three", "tiny"]:
        handle, spec = _resolve(runner, model)
        ids = runner.serving.tokenizers.inline(TEXTS[0])["input_ids"]
        requests.append(ClassifyRequest([list(ids)], handle, spec))
        runner.batcher.submit(requests[-1])
    runner.batcher.step()
    assert [r.future.done() for r in requests] == [True, False, True]
    runner.batcher.step()  # the slot is free again: the second adapter takes it
    expected = peft_logits(tiny_berts.base, tiny_berts.adapters["three"], TEXTS[0])
    torch.testing.assert_close(requests[1].future.result()[0], expected, atol=1e-5, rtol=1e-5)


def test_regression_answers_one_score_equal_to_peft(tiny_berts: TinyBerts) -> None:
    runner = make_runner(tiny_berts.regression_base, RegressionRunner)
    with TestClient(create_app(runner)) as client:
        response = client.put("/v1/adapters/score", json={"path": str(tiny_berts.adapters["score"])})
        assert response.status_code == 200 and response.json()["labels"] == ["score"]
        for model, adapter in [("tiny", None), ("score", tiny_berts.adapters["score"])]:
            body = classify(client, model, TEXTS)
            for text, item in zip(TEXTS, body["data"]):
                assert_matches(item["logits"], ["score"], peft_logits(tiny_berts.regression_base, adapter, text))
        error = error_of(client.post("/v1/classification", json={"model": "score", "input": "hi",
                                                                 "data_format": "probs"}), 400)
        assert "regression" in error["message"] and error["param"] == "data_format"
        # A classifier's adapter does not fit a regression engine.
        error = error_of(client.put("/v1/adapters/two", json={"path": str(tiny_berts.adapters["two"])}), 422)
        assert "classification engine" in error["message"]


def test_base_without_a_head_answers_409_and_its_fine_tunes_serve(tiny_berts: TinyBerts) -> None:
    runner = make_runner(tiny_berts.bare)
    with TestClient(create_app(runner)) as client:
        error = error_of(client.post("/v1/classification", json={"model": "tiny", "input": "hello"}), 409)
        assert "no trained classification head" in error["message"] and "fine-tuned" in error["message"]
        assert client.get("/health").json()["base_head"]["status"] == "unavailable"
        # PEFT applies it over the same bare base: the head comes from the adapter alone.
        adapter = tiny_berts.adapters["three"]
        assert client.put("/v1/adapters/three", json={"path": str(adapter)}).status_code == 200
        item = classify(client, "three", TEXTS[0])["data"][0]
        assert_matches(item["logits"], tiny_berts.labels["three"], peft_logits(tiny_berts.bare, adapter, TEXTS[0]))


def test_empty_and_over_length_inputs_are_400_unless_truncation_is_asked(client: TestClient,
                                                                        tiny_berts: TinyBerts) -> None:
    for body in [{"input": ""}, {"input": []}, {"input": ["fine", ""]}, {"input": 3}, {}]:
        error = error_of(client.post("/v1/classification", json={"model": "two", **body}), 400)
        assert error["param"] == "input", error
    long_text = " ".join(["apple river mountain"] * 20)
    error = error_of(client.post("/v1/classification", json={"model": "two", "input": ["hi", long_text]}), 400)
    assert error["code"] == "context_length_exceeded" and "input[1]" in error["message"]
    assert "32" in error["message"] and "truncate" in error["message"]
    for flag in ("truncate", "truncation"):
        item = classify(client, "two", long_text, **{flag: True})["data"][0]
        expected = peft_logits(tiny_berts.base, tiny_berts.adapters["two"], long_text, max_length=32)
        assert_matches(item["logits"], tiny_berts.labels["two"], expected)
    error = error_of(client.post("/v1/classification", json={"model": "two", "input": "x", "data_format": "odds"}), 400)
    assert error["param"] == "data_format"


def test_unknown_model_is_404_and_health_lists_adapters(client: TestClient) -> None:
    error = error_of(client.post("/v1/classification", json={"model": "nope", "input": "hello"}), 404)
    assert error["code"] == "model_not_found"
    health = client.get("/health").json()
    assert health["task_type"] == "classification" and health["served_name"] == "tiny"
    assert health["adapters"]["two"]["status"] == "loaded" and health["max_model_len"] == 32
    assert health["base_head"] == {"status": "ready", "labels": ["neg", "pos"], "problem": "single_label"}
    models = {m["id"]: m["parent"] for m in client.get("/v1/models").json()["data"]}
    assert models == {"tiny": None, "two": "tiny", "three": "tiny", "multi": "tiny"}


def test_llama_decoder_pools_the_last_real_token_of_each_row(tiny_llama_dir: Path,
                                                             tmp_path: Path) -> None:
    adapter = build_classifier_adapter(tiny_llama_dir, tmp_path / "llama-cls", ["a", "b", "c"], seed=5,
                                       target_modules=("q_proj", "v_proj"))
    runner = make_runner(tiny_llama_dir)
    with TestClient(create_app(runner)) as client:
        # A causal LM has no classification head: its base deployment cannot answer.
        assert client.post("/v1/classification", json={"model": "tiny", "input": "hi"}).status_code == 409
        assert client.put("/v1/adapters/cls", json={"path": str(adapter)}).status_code == 200
        body = classify(client, "cls", TEXTS)  # different lengths: padded rows in one forward
        for text, item in zip(TEXTS, body["data"]):
            assert_matches(item["logits"], ["a", "b", "c"], peft_logits(tiny_llama_dir, adapter, text))


def _resolve(runner: ClassificationRunner, model: str) -> tuple[Any, Any]:
    if model == runner.served_name:
        return None, runner.serving.base_head.spec
    handle = runner.registry.acquire(runner.registry.get(model))  # type: ignore[arg-type]
    return handle, handle.weights.spec  # type: ignore[attr-defined]
