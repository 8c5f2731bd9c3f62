"""The classification and regression model runners: one sequence-classification model, many
LoRA adapters each with its own head and labels, one request batcher."""

from __future__ import annotations

import logging
from typing import Any

import torch

from enginehouse.runtime.base import ReplicaLoadError
from enginehouse.runtime.classify.adapters import ClassifierAdapterReader
from enginehouse.runtime.classify.batcher import BatcherConfig, ClassificationBatcher
from enginehouse.runtime.classify.heads import HeadBank, HeadLayout, discover_heads
from enginehouse.runtime.classify.labels import HeadMismatch, head_spec
from enginehouse.runtime.classify.loading import (
    LoadedClassifier,
    load_sequence_classifier,
    resolve_max_model_len,
)
from enginehouse.runtime.classify.pooling import RoutedMeanPooling, pooler_problem
from enginehouse.runtime.classify.serving import BaseHead, ClassificationServing
from enginehouse.runtime.lora.layers import MultiLoRAModel
from enginehouse.runtime.lora.registry import AdapterEntry, AdapterRegistry
from enginehouse.runtime.lora.runner import LoRARunner
from enginehouse.runtime.tokenizing import TokenizerThreads

log = logging.getLogger(__name__)


class ClassificationRunner(LoRARunner[ClassificationBatcher, ClassificationServing]):
    task_type = "classification"

    def load(self) -> None:
        self.load_from(load_sequence_classifier(self.base_model, self.options.dtype))

    def load_from(self, loaded: LoadedClassifier) -> None:
        """Wire everything around an already loaded model (tests build one in-process)."""
        options = self.options
        self.max_model_len = resolve_max_model_len(options.max_model_len, loaded.max_length)
        lora = MultiLoRAModel(loaded.model, num_slots=options.max_loras + 1, max_rank=options.max_lora_rank)
        layout = self._discover(loaded)
        pooling, pooling_problem = self._mean_pooling(loaded, lora)
        heads = HeadBank(loaded.model, layout, lora.routing, lora.num_slots, pooling=pooling)
        reader = ClassifierAdapterReader(
            targets=lora.targets,
            layout=layout,
            task_type=self.task_type,
            model_type=loaded.config.get("model_type"),
            max_rank=options.max_lora_rank,
            dtype=loaded.dtype,
            pooling_problem=pooling_problem,
        )
        self._registry = AdapterRegistry(reader, options.max_cpu_loras)
        config = BatcherConfig(
            max_batch_size=options.max_batch_size,
            max_batch_tokens=options.max_prefill_tokens,
            pad_token_id=loaded.pad_token_id,
        )
        self._worker = ClassificationBatcher(lora, heads, config)
        self._serving = ClassificationServing(
            batcher=self._worker,
            tokenizers=TokenizerThreads(loaded.tokenizer),
            registry=self._registry,
            served_name=self.served_name,
            base_head=self._base_head(loaded, layout),
            max_model_len=self.max_model_len,
            metrics=self.metrics,
        )

    def _discover(self, loaded: LoadedClassifier) -> HeadLayout:
        try:
            return discover_heads(loaded.model, self._probe(loaded))
        except ValueError as exc:
            raise ReplicaLoadError(f"base model {self.base_model!r} cannot serve {self.task_type}: {exc}") from None

    def _mean_pooling(self, loaded: LoadedClassifier, lora: MultiLoRAModel) -> tuple[RoutedMeanPooling | None,
                                                                                     str | None]:
        """The per-slot mean pooling for adapters that declare it, or why this model has none.
        Installed after LoRA, which wraps layers inside the pooler without renaming it."""
        problem = pooler_problem(loaded.model, self._probe(loaded))
        if problem is not None:
            return None, problem
        return RoutedMeanPooling(loaded.model, lora.routing, lora.num_slots), None

    @staticmethod
    def _probe(loaded: LoadedClassifier) -> torch.Tensor:
        ids = loaded.tokenizer("hello")["input_ids"] or [loaded.pad_token_id]
        return torch.tensor([ids], device=loaded.device)

    def _base_head(self, loaded: LoadedClassifier, layout: HeadLayout) -> BaseHead:
        untrained = sorted(k for k in loaded.missing_keys if layout.owner(k))
        if untrained:
            architectures = ", ".join(loaded.config.get("architectures") or []) or "unknown"
            return BaseHead(None, (
                f"the base model '{self.served_name}' has no trained classification head (its checkpoint "
                f"is a {architectures} without {', '.join(untrained)}); deploy a fine-tuned checkpoint "
                "that brings its own head and call that deployment instead"
            ))
        others = sorted(k for k in loaded.missing_keys if not layout.owner(k))
        if others:
            log.warning("base model weights initialised at random (not in the checkpoint): %s", ", ".join(others))
        try:
            return BaseHead(head_spec(loaded.config, layout.output_width, self.task_type))
        except HeadMismatch as exc:
            return BaseHead(None, (
                f"the base model '{self.served_name}' cannot answer as a {self.task_type} model: {exc}; "
                "call a fine-tuned deployment instead"
            ))

    @property
    def batcher(self) -> ClassificationBatcher:
        return self.worker

    def health(self) -> dict[str, Any]:
        return {**super().health(), "base_head": self.serving.base_head.describe()}

    def describe_adapter(self, entry: AdapterEntry) -> dict[str, Any]:
        handle = self.registry.acquire(entry)  # just read: still in host memory
        return {"labels": list(handle.weights.spec.labels)}  # type: ignore[attr-defined]


class RegressionRunner(ClassificationRunner):
    """The same runtime; heads must have one output, answered under the label ``score``."""

    task_type = "regression"
