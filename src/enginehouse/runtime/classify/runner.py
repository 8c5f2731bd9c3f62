"""The classification and regression model runners: one sequence-classification model, many
LoRA adapters each with its own head and labels, one request batcher."""

from __future__ import annotations

import logging
from typing import Any

import torch
from fastapi import APIRouter

from enginehouse.errors import ConflictError, ValidationFailedError
from enginehouse.runtime.base import ModelRunner, ReplicaLoadError, loaded
from enginehouse.runtime.classify.adapters import ClassifierAdapterReader
from enginehouse.runtime.classify.batcher import BatcherConfig, ClassificationBatcher
from enginehouse.runtime.classify.heads import HeadBank, HeadLayout, discover_heads
from enginehouse.runtime.classify.labels import HeadMismatch, head_spec
from enginehouse.runtime.classify.loading import (
    InputEncoder,
    LoadedClassifier,
    load_sequence_classifier,
    resolve_max_model_len,
)
from enginehouse.runtime.classify.serving import BaseHead, ClassificationServing
from enginehouse.runtime.lora.layers import MultiLoRAModel
from enginehouse.runtime.lora.peft_format import AdapterLoadError
from enginehouse.runtime.lora.registry import AdapterRegistry
from enginehouse.runtime.metrics import ReplicaLoad
from enginehouse.runtime.options import RuntimeOptions

log = logging.getLogger(__name__)


class ClassificationRunner(ModelRunner):
    task_type = "classification"
    serves_adapters = True

    def __init__(self, *, base_model: str, served_name: str, options: RuntimeOptions) -> None:
        super().__init__(base_model=base_model, served_name=served_name, options=options)
        self._batcher: ClassificationBatcher | None = None
        self._serving: ClassificationServing | None = None
        self._registry: AdapterRegistry | None = None
        self.max_model_len = 0

    def load(self) -> None:
        self.load_from(load_sequence_classifier(self.base_model, self.options.dtype))

    def load_from(self, loaded: LoadedClassifier) -> None:
        """Wire everything around an already loaded model (tests build one in-process)."""
        options = self.options
        self.max_model_len = resolve_max_model_len(options.max_model_len, loaded.max_length)
        lora = MultiLoRAModel(loaded.model, num_slots=options.max_loras + 1, max_rank=options.max_lora_rank)
        layout = self._discover(loaded)
        heads = HeadBank(loaded.model, layout, lora.routing, lora.num_slots)
        reader = ClassifierAdapterReader(
            targets=lora.targets,
            layout=layout,
            task_type=self.task_type,
            model_type=loaded.config.get("model_type"),
            max_rank=options.max_lora_rank,
            dtype=loaded.dtype,
        )
        self._registry = AdapterRegistry(reader, options.max_cpu_loras)
        config = BatcherConfig(
            max_batch_size=options.max_batch_size,
            max_batch_tokens=options.max_prefill_tokens,
            pad_token_id=loaded.pad_token_id,
        )
        self._batcher = ClassificationBatcher(lora, heads, config)
        self._serving = ClassificationServing(
            batcher=self._batcher,
            encoder=InputEncoder(loaded.tokenizer),
            registry=self._registry,
            served_name=self.served_name,
            base_head=self._base_head(loaded, layout),
            max_model_len=self.max_model_len,
            metrics=self.metrics,
        )

    def _discover(self, loaded: LoadedClassifier) -> HeadLayout:
        probe = loaded.tokenizer("hello")["input_ids"] or [loaded.pad_token_id]
        try:
            return discover_heads(loaded.model, torch.tensor([probe], device=loaded.device))
        except ValueError as exc:
            raise ReplicaLoadError(f"base model {self.base_model!r} cannot serve {self.task_type}: {exc}") from None

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
        return loaded(self._batcher)

    @property
    def registry(self) -> AdapterRegistry:
        return loaded(self._registry)

    @property
    def serving(self) -> ClassificationServing:
        return loaded(self._serving)

    def start(self) -> None:
        self.batcher.start()

    def stop(self) -> None:
        self.batcher.stop()

    def router(self) -> APIRouter:
        return self.serving.router()

    def served_models(self) -> list[tuple[str, str | None]]:
        return [(self.served_name, None), *((name, self.served_name) for name in self.registry.loaded_names())]

    def health(self) -> dict[str, Any]:
        running, waiting = self.batcher.counts()
        return {
            "adapters": self.registry.snapshot(),
            "base_head": self.serving.base_head.describe(),
            "running": running,
            "waiting": waiting,
            "max_model_len": self.max_model_len,
        }

    def load_report(self) -> ReplicaLoad:
        if self._batcher is None or self._registry is None:
            return ReplicaLoad()
        running, waiting = self._batcher.counts()
        in_service = self._registry.loaded_ids()
        return ReplicaLoad(
            running=running,
            waiting=waiting,
            device_adapters=len(in_service.intersection(self._batcher.slots.resident())),
            host_adapters=len(in_service.intersection(self._registry.host_resident())),
        )

    def load_adapter(self, name: str, path: str) -> dict[str, Any]:
        if name == self.served_name:
            raise ConflictError(f"'{name}' is the base model's served name; pick another adapter name")
        try:
            entry = self.registry.load(name, path)
            handle = self.registry.acquire(entry)  # just read: still in host memory
        except AdapterLoadError as exc:
            raise ValidationFailedError(str(exc), code="adapter_load_failed", param="path") from None
        labels = list(handle.weights.spec.labels)  # type: ignore[attr-defined]
        return {"name": name, "status": entry.status, "path": entry.path, "rank": entry.rank, "labels": labels}

    def unload_adapter(self, name: str) -> bool:
        return self.registry.unload(name)


class RegressionRunner(ClassificationRunner):
    """The same runtime; heads must have one output, answered under the label ``score``."""

    task_type = "regression"
