"""Checkpoints that do not fit a classification engine are refused with a reason a user can act
on (422, which fails the deployment), and the replica goes on serving; the request model."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from pydantic import ValidationError
from safetensors.torch import load_file, save_file
from transformers import AutoModelForTokenClassification

from enginehouse.protocol.classification import ClassificationRequest
from enginehouse.runtime.server import create_app
from tests.unit.runtime.test_classification import (  # noqa: F401 - tiny_berts is a fixture
    TEXTS,
    TinyBerts,
    build_classifier_adapter,
    make_runner,
    tiny_berts,
)

Tensors = dict[str, torch.Tensor]


def edited_copy(src: Path, dst: Path, *, tensors: Callable[[Tensors], Tensors] | None = None,
                adapter_config: dict[str, object] | None = None,
                model_config: dict[str, object] | None = None) -> Path:
    """A copy of adapter ``src`` with its weights and/or configs changed."""
    shutil.copytree(src, dst)
    if tensors is not None:
        path = dst / "adapter_model.safetensors"
        save_file(tensors(load_file(str(path))), str(path))
    for name, changes in (("adapter_config.json", adapter_config), ("config.json", model_config)):
        if changes:
            data = json.loads((dst / name).read_text())
            (dst / name).write_text(json.dumps({**data, **changes}))
    return dst


def build_token_classification_adapter(base_dir: Path, out_dir: Path) -> Path:
    from peft import LoraConfig, get_peft_model

    model = AutoModelForTokenClassification.from_pretrained(str(base_dir), num_labels=3, ignore_mismatched_sizes=True)
    config = LoraConfig(r=4, target_modules=["query", "value"], task_type="TOKEN_CLS")
    get_peft_model(model, config).save_pretrained(str(out_dir))
    model.config.save_pretrained(str(out_dir))
    return out_dir


def _rename(old: str, new: str) -> Callable[[Tensors], Tensors]:
    return lambda tensors: {k.replace(old, new): v for k, v in tensors.items()}


def _with(**extra: torch.Tensor) -> Callable[[Tensors], Tensors]:
    return lambda tensors: {**tensors, **{k.replace("__", "."): v for k, v in extra.items()}}


@pytest.fixture(scope="module")
def misfits(tiny_berts: TinyBerts, tiny_adapter_dirs: list[Path], tmp_path_factory: pytest.TempPathFactory
            ) -> dict[str, tuple[Path, str]]:
    """Each wrong checkpoint, with words its refusal must contain."""
    root = tmp_path_factory.mktemp("misfits")
    two, three = tiny_berts.adapters["two"], tiny_berts.adapters["three"]
    prefix = "base_model__model__"
    return {
        "full model": (tiny_berts.base, "no adapter_config.json"),
        "not lora": (edited_copy(two, root / "ia3", adapter_config={"peft_type": "IA3"}), "only LoRA adapters"),
        "ner adapter": (build_token_classification_adapter(tiny_berts.base, root / "ner"),
                        "token-classification (NER)"),
        "causal lm adapter": (tiny_adapter_dirs[0], "text-generation adapter"),
        "no head": (build_classifier_adapter(tiny_berts.base, root / "no-head", ["a", "b"], seed=6, with_head=False),
                    "no classification head"),
        "head of another size": (edited_copy(three, root / "narrow", tensors=_with(**{
            f"{prefix}classifier__weight": torch.zeros(3, 32)})), "hidden size 64"),
        "absent targets": (edited_copy(two, root / "absent", tensors=_rename(".query.", ".querx.")),
                           "different base model"),
        "rank over limit": (build_classifier_adapter(tiny_berts.base, root / "r16", ["a", "b"], seed=7, r=16),
                            "max_lora_rank 8"),
        "labels do not fit the head": (edited_copy(three, root / "labels", model_config={
            "id2label": {"0": "a", "1": "b"}}), "id2label names 2 label(s) but the head has 3"),
        "regression checkpoint": (tiny_berts.adapters["score"], "regression engine"),
        "saves shared modules": (edited_copy(two, root / "pooler", tensors=_with(**{
            f"{prefix}bert__pooler__dense__weight": torch.zeros(64, 64)})), "shares"),
        "lora on the head": (edited_copy(two, root / "lora-head", tensors=_with(**{
            f"{prefix}classifier__lora_A__weight": torch.ones(4, 64),
            f"{prefix}classifier__lora_B__weight": torch.ones(2, 4)})), "LoRA on the classification head"),
    }


@pytest.fixture(scope="module")
def client(tiny_berts: TinyBerts) -> Iterator[TestClient]:
    runner = make_runner(tiny_berts.base, max_lora_rank=8)
    with TestClient(create_app(runner)) as test_client:
        assert test_client.put("/v1/adapters/two", json={"path": str(tiny_berts.adapters["two"])}).status_code == 200
        yield test_client


@pytest.mark.parametrize("case", [
    "full model", "not lora", "ner adapter", "causal lm adapter", "no head", "head of another size",
    "absent targets", "rank over limit", "labels do not fit the head", "regression checkpoint",
    "saves shared modules", "lora on the head",
])
def test_a_checkpoint_that_does_not_fit_is_refused_and_the_rest_keeps_serving(
    client: TestClient, misfits: dict[str, tuple[Path, str]], case: str
) -> None:
    path, words = misfits[case]
    response = client.put("/v1/adapters/bad", json={"path": str(path)})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert words in error["message"], error["message"]
    assert error["code"] == "adapter_load_failed"
    health = client.get("/health").json()
    assert health["adapters"]["bad"]["status"] == "failed" and words in health["adapters"]["bad"]["reason"]
    response = client.post("/v1/classification", json={"model": "two", "input": TEXTS})
    assert response.status_code == 200 and len(response.json()["data"]) == len(TEXTS)
    assert client.post("/v1/classification", json={"model": "bad", "input": "x"}).status_code == 404


def test_the_base_name_cannot_be_taken_by_an_adapter(client: TestClient, tiny_berts: TinyBerts) -> None:
    response = client.put("/v1/adapters/tiny", json={"path": str(tiny_berts.adapters["three"])})
    assert response.status_code == 409


def test_request_model_validates_input_and_refuses_unknown_fields() -> None:
    request = ClassificationRequest.model_validate(
        {"model": "m", "input": "hello", "data_format": "probs", "truncation": True})
    with pytest.raises(ValidationError, match="encoding_format"):
        ClassificationRequest.model_validate({"model": "m", "input": "hello", "encoding_format": "x"})
    assert request.inputs() == ["hello"] and request.wants_truncation and request.data_format == "probs"
    assert ClassificationRequest.model_validate({"model": "m", "input": ["a", "b"]}).inputs() == ["a", "b"]
    assert not ClassificationRequest.model_validate({"model": "m", "input": "a"}).wants_truncation
    for bad, words in [({"input": ""}, "must not be empty"), ({"input": []}, "must not be empty"),
                       ({"input": ["a", ""]}, "input[1] is empty"), ({"input": [1, 2]}, "string or a list"),
                       ({"input": ["a"] * 2049}, "at most 2048"), ({"input": "a", "data_format": "x"}, "logits")]:
        with pytest.raises(ValidationError, match=words.replace("[", r"\[").replace("]", r"\]")):
            ClassificationRequest.model_validate({"model": "m", **bad})


def test_heads_carry_no_probe_hooks(tiny_berts: TinyBerts) -> None:
    # The probe that finds the heads hooks the model; neither it nor the head copies keep a hook
    # (a kept hook copied the head again on every call, and kept every copy).
    runner = make_runner(tiny_berts.base)
    runner.load_adapter("two", str(tiny_berts.adapters["two"]))
    model = runner.worker.lora.model
    hooked = [module for module in model.modules() if module._forward_hooks]
    # Only mean pooling's own: the backbone (which lets go of the mask) and its pooler.
    assert hooked == [model.base_model, model.base_model.pooler]
    assert [len(module._forward_hooks) for module in hooked] == [1, 1]
    handle = runner.registry.acquire(runner.registry.get("two"))
    assert all(not m._forward_hooks for head in handle.weights.heads.values()  # type: ignore[attr-defined]
               for m in head.modules())
