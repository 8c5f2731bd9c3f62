"""Read a classification or regression adapter and check that all of it fits this engine.

Such an adapter is a PEFT LoRA adapter over the backbone plus the head it trained, which PEFT
saves through ``modules_to_save`` (``task_type="SEQ_CLS"`` adds ``classifier``/``score`` for
you), and the labels of the ``config.json`` saved beside it (``model.config.save_pretrained``).
Whatever does not fit (another task's checkpoint, another base model, a head of the wrong size,
a rank over the limit) is an ``AdapterLoadError`` whose message says what to do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from enginehouse.core.json_files import JsonFileError, read_json_object
from enginehouse.runtime.classify.heads import HeadError, HeadLayout
from enginehouse.runtime.classify.labels import HeadMismatch, HeadSpec, head_spec
from enginehouse.runtime.classify.pooling import PoolingError, SentencePooling, read_sentence_pooling
from enginehouse.runtime.lora.layers import TargetInfo
from enginehouse.runtime.lora.peft_format import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    AdapterLoadError,
    LoRAWeights,
    read_lora_adapter,
)

MODEL_CONFIG_FILE = "config.json"

# What another task's adapter says about itself (PEFT's task_type in adapter_config.json), in
# the words a user recognises. config.json's ``architectures`` cannot tell: ``config.save_pretrained``
# keeps the base checkpoint's architecture whatever head was trained on top.
_OTHER_PEFT_TASKS = {
    "TOKEN_CLS": "a token-classification (NER) adapter; deploy it on an ner engine",
    "CAUSAL_LM": "a text-generation adapter; deploy it on a text-generation engine",
    "SEQ_2_SEQ_LM": "a sequence-to-sequence adapter",
    "QUESTION_ANS": "a question-answering adapter",
    "FEATURE_EXTRACTION": "a feature-extraction (embedding) adapter without a classification head",
}


@dataclass(frozen=True, kw_only=True)
class ClassifierAdapter(LoRAWeights):
    """A checked adapter: its LoRA weights, its labels, its own head modules (CPU) and what its
    head reads (None: the model's own pooled output)."""

    spec: HeadSpec
    heads: dict[str, nn.Module]
    pooling: SentencePooling | None = None

    @property
    def nbytes(self) -> int:
        head = sum(p.nbytes for module in self.heads.values() for p in module.state_dict().values())
        return super().nbytes + head


class ClassifierAdapterReader:
    """``registry``'s reader for one engine: ``reader(path) -> ClassifierAdapter``."""

    def __init__(
        self,
        *,
        targets: Mapping[str, TargetInfo],
        layout: HeadLayout,
        task_type: str,
        model_type: str | None,
        max_rank: int,
        dtype: torch.dtype,
        pooling_problem: str | None = None,
    ) -> None:
        self.targets = targets
        self.layout = layout
        self.task_type = task_type
        self.model_type = model_type
        self.max_rank = max_rank
        self.dtype = dtype
        # Why this engine's base model cannot pool by mean (None: it can).
        self.pooling_problem = pooling_problem

    def __call__(self, path: str) -> ClassifierAdapter:
        directory = Path(path)
        model_config = _read_json(directory / MODEL_CONFIG_FILE)
        self._check_task(directory, _read_json(directory / CONFIG_FILE), model_config)
        pooling = self._pooling(model_config)
        weights = read_lora_adapter(
            directory, self.targets, max_rank=self.max_rank, dtype=self.dtype, keep_saved_modules=True
        )
        self._check_lora_modules(weights)
        heads = self._build_heads(weights.saved)
        outputs = self.layout.logits_width(heads[self.layout.logits_module])
        try:
            spec = head_spec(model_config, outputs, self.task_type)
        except HeadMismatch as exc:
            raise AdapterLoadError(f"the checkpoint does not fit a {self.task_type} engine: {exc}") from None
        return ClassifierAdapter(
            path=weights.path, rank=weights.rank, modules=weights.modules, spec=spec, heads=heads, pooling=pooling
        )

    def _pooling(self, model_config: dict[str, Any]) -> SentencePooling | None:
        try:
            pooling = read_sentence_pooling(model_config)
        except PoolingError as exc:
            raise AdapterLoadError(f"the checkpoint's {MODEL_CONFIG_FILE} is not usable: {exc}") from None
        if pooling is not None and self.pooling_problem is not None:
            raise AdapterLoadError(
                "the checkpoint's head reads the mean-pooled sentence embedding (sentence_pooling 'mean' in "
                f"its {MODEL_CONFIG_FILE}), which this engine cannot give: {self.pooling_problem}"
            )
        return pooling

    def _check_task(self, directory: Path, adapter_config: dict[str, Any], model_config: dict[str, Any]) -> None:
        mismatch = f"task type mismatch: {directory} is"
        fix = f"this engine serves {self.task_type}, which needs a sequence-classification adapter"
        task = str(adapter_config.get("task_type") or "").upper()
        if task in _OTHER_PEFT_TASKS:
            raise AdapterLoadError(f"{mismatch} {_OTHER_PEFT_TASKS[task]} (PEFT task_type {task}); {fix}")
        theirs = model_config.get("model_type")
        if theirs and self.model_type and theirs != self.model_type:
            raise AdapterLoadError(
                f"the adapter was trained for a different base model: its config.json says model_type "
                f"{theirs!r}, this engine's base model is {self.model_type!r}"
            )

    def _check_lora_modules(self, weights: LoRAWeights) -> None:
        on_head = sorted(m for m in weights.modules if self.layout.owner(m))
        if on_head:
            raise AdapterLoadError(
                f"LoRA on the classification head ({', '.join(on_head)}) is not supported; train the "
                f"head in full through modules_to_save (e.g. modules_to_save=['{self.layout.logits_module}']) "
                "and target only the backbone with LoRA"
            )

    def _build_heads(self, saved: dict[str, torch.Tensor]) -> dict[str, nn.Module]:
        grouped: dict[str, dict[str, torch.Tensor]] = {}
        for key, tensor in saved.items():
            owner = self.layout.owner(key)
            if owner is None:
                raise AdapterLoadError(
                    f"the adapter saves {key} in full (modules_to_save), but that is part of the base "
                    "model every deployment on this engine shares; only the classification head "
                    f"({', '.join(self.layout.names)}) can differ per deployment: retrain with "
                    f"modules_to_save=['{self.layout.logits_module}']"
                )
            grouped.setdefault(owner, {})[key.removeprefix(owner + ".")] = tensor
        if self.layout.logits_module not in grouped:
            raise AdapterLoadError(
                f"the adapter has no classification head: {WEIGHTS_FILE} holds no weights for "
                f"{self.layout.logits_module} (is it an adapter for another task, such as text "
                f"generation?). A {self.task_type} adapter is trained with PEFT task_type='SEQ_CLS', "
                f"which saves the head with it (modules_to_save=['{self.layout.logits_module}'])"
            )
        try:
            return {name: self.layout.build(name, tensors) for name, tensors in grouped.items()}
        except HeadError as exc:
            raise AdapterLoadError(str(exc)) from None


def _read_json(path: Path) -> dict[str, Any]:
    """The file's object, or {} when it is absent; a damaged file is the user's to fix."""
    if not path.is_file():
        return {}
    try:
        return read_json_object(path)
    except JsonFileError as exc:
        raise AdapterLoadError(str(exc)) from None
