"""Adapters whose head reads the mean-pooled sentence embedding (``sentence_pooling: mean`` in their
config.json): equal to the same computation done by hand, alone or padded in a batch, beside
ordinary adapters and the base model in one forward; refused where the base model has no pooler."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from fastapi.testclient import TestClient
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedTokenizerBase

from enginehouse.demo.tiny_encoders import build_tiny_bert
from enginehouse.runtime.classify.batcher import ClassifyRequest
from enginehouse.runtime.classify.runner import ClassificationRunner
from enginehouse.runtime.server import create_app
from tests.unit.runtime.test_classification import TEXTS, _resolve, build_classifier_adapter, make_runner, peft_logits

LABELS = ["calm", "urgent", "other"]


@dataclass(frozen=True)
class Models:
    base: Path  # a BERT with a sequence-classification head of its own
    adapters: dict[str, Path]  # "mean" and "raw-mean" read the mean; "two" the pooled first token


def with_markers(adapter: Path, **markers: object) -> Path:
    config = json.loads((adapter / "config.json").read_text())
    (adapter / "config.json").write_text(json.dumps({**config, **markers}))
    return adapter


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    root = tmp_path_factory.mktemp("mean-pooling")
    base = build_tiny_bert(root / "base", head="sequence-classification", labels=["neg", "pos"])
    return Models(base, {
        "mean": with_markers(build_classifier_adapter(base, root / "mean", LABELS, seed=11),
                             sentence_pooling="mean", sentence_normalize=True),
        "raw-mean": with_markers(build_classifier_adapter(base, root / "raw", ["a", "b"], seed=12),
                                 sentence_pooling="mean", sentence_normalize=False),
        "two": build_classifier_adapter(base, root / "two", ["no", "yes"], seed=1),
    })


@lru_cache(maxsize=4)
def _merged(base_dir: str, adapter_dir: str) -> torch.nn.Module:
    from peft import PeftModel

    config = json.loads((Path(adapter_dir) / "config.json").read_text())
    id2label = {int(k): v for k, v in config["id2label"].items()}
    model = AutoModelForSequenceClassification.from_pretrained(
        base_dir, dtype=torch.float32, num_labels=len(id2label), id2label=id2label, ignore_mismatched_sizes=True)
    return PeftModel.from_pretrained(model, adapter_dir).merge_and_unload().eval()


@lru_cache(maxsize=64)
def by_hand(base_dir: Path, adapter_dir: Path, text: str) -> torch.Tensor:
    """The last hidden state of the LoRA-merged encoder, averaged over the tokens, normalised if
    the adapter asks, through the adapter's classifier."""
    model = _merged(str(base_dir), str(adapter_dir))
    normalize = json.loads((adapter_dir / "config.json").read_text())["sentence_normalize"]
    encoded = _tokenizer(str(base_dir))(text, return_tensors="pt")
    with torch.inference_mode():
        hidden = model.bert(**encoded).last_hidden_state[0]
        pooled = hidden.mean(dim=0)  # one unpadded row: every token is real
        if normalize:
            pooled = F.normalize(pooled, dim=0)
        return model.classifier(pooled)


@lru_cache(maxsize=2)
def _tokenizer(base_dir: str) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(base_dir)


def _runner(models: Models, **options: object) -> ClassificationRunner:
    runner = make_runner(models.base, **options)  # not started: the test steps the batcher itself
    for name, path in models.adapters.items():
        runner.load_adapter(name, str(path))
    return runner


def _submit(runner: ClassificationRunner, model: str, texts: list[str]) -> ClassifyRequest:
    handle, spec = _resolve(runner, model)
    rows = [list(runner.serving.tokenizers.inline(text)["input_ids"]) for text in texts]
    request = ClassifyRequest(rows, handle, spec)
    runner.batcher.submit(request)
    return request


def _expected(models: Models, model: str, text: str) -> torch.Tensor:
    if model in ("mean", "raw-mean"):
        return by_hand(models.base, models.adapters[model], text)
    # The pooled first token, exactly as PEFT computes it ("tiny": the base model).
    return _peft(models.base, models.adapters.get(model), text)


@lru_cache(maxsize=64)
def _peft(base: Path, adapter: Path | None, text: str) -> torch.Tensor:
    return peft_logits(base, adapter, text)


def test_mean_pooled_logits_equal_the_computation_by_hand_alone_and_padded(models: Models) -> None:
    runner = _runner(models)
    expected = [_expected(models, "mean", text) for text in TEXTS]
    for text, want in zip(TEXTS, expected):  # one unpadded row per forward
        request = _submit(runner, "mean", [text])
        assert runner.batcher.step() is True
        torch.testing.assert_close(request.future.result()[0], want, atol=1e-5, rtol=1e-5)
    request = _submit(runner, "mean", TEXTS)  # rows of different lengths: padded in one forward
    assert runner.batcher.step() is True
    torch.testing.assert_close(request.future.result(), torch.stack(expected), atol=1e-5, rtol=1e-5)
    # Not what the pooled first token gives: the head really reads something else.
    assert not torch.allclose(expected[0], _peft(models.base, models.adapters["mean"], TEXTS[0]), atol=1e-3)


def test_one_forward_mixes_mean_pooled_ordinary_and_base_rows(models: Models) -> None:
    runner = _runner(models)
    names = ["two", "mean", "tiny", "raw-mean", "mean", "two"]
    requests = [(name, _submit(runner, name, TEXTS[:2])) for name in names]
    assert runner.batcher.step() is True
    for name, request in requests:
        assert request.future.done(), "every row ran in the one forward"
        for row, text in enumerate(TEXTS[:2]):
            torch.testing.assert_close(request.future.result()[row], _expected(models, name, text),
                                       atol=1e-5, rtol=1e-5)


def test_a_slot_reused_by_an_ordinary_adapter_pools_as_the_model_again(models: Models) -> None:
    runner = _runner(models, max_loras=1)
    for name in ["mean", "two", "mean", "raw-mean"]:  # one slot, written by each in turn
        request = _submit(runner, name, [TEXTS[0]])
        assert runner.batcher.step() is True
        torch.testing.assert_close(request.future.result()[0], _expected(models, name, TEXTS[0]),
                                   atol=1e-5, rtol=1e-5)


def test_mean_pooling_is_refused_where_it_cannot_work(models: Models, tiny_llama_dir: Path, tmp_path: Path) -> None:
    llama_adapter = with_markers(
        build_classifier_adapter(tiny_llama_dir, tmp_path / "llama", ["a", "b"], seed=5,
                                 target_modules=("q_proj", "v_proj")),
        sentence_pooling="mean", sentence_normalize=True)
    with TestClient(create_app(make_runner(tiny_llama_dir))) as client:
        response = client.put("/v1/adapters/cls", json={"path": str(llama_adapter)})
        assert response.status_code == 422, response.text
        message = response.json()["error"]["message"]
        assert "sentence_pooling 'mean'" in message and "no pooler" in message and "decoders" in message
    bad = {"unknown mode": ({"sentence_pooling": "max"}, "'max' in config.json is not supported"),
           "not a boolean": ({"sentence_pooling": "mean", "sentence_normalize": "yes"}, "must be true or false")}
    with TestClient(create_app(make_runner(models.base))) as client:
        for name, (markers, words) in bad.items():
            adapter = with_markers(build_classifier_adapter(models.base, tmp_path / name, ["a", "b"], seed=6),
                                   **markers)
            response = client.put(f"/v1/adapters/{name.replace(' ', '-')}", json={"path": str(adapter)})
            assert response.status_code == 422 and words in response.json()["error"]["message"], response.text
