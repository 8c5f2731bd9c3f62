"""The text-generation model runner: a causal LM, many LoRA adapters, one batching engine."""

from __future__ import annotations

import functools
import logging
from typing import Any

from fastapi import APIRouter

from enginehouse.errors import ConflictError, ValidationFailedError
from enginehouse.runtime.base import ModelRunner, ReplicaLoadError, loaded
from enginehouse.runtime.lora.layers import MultiLoRAModel
from enginehouse.runtime.lora.peft_format import AdapterLoadError, read_lora_adapter
from enginehouse.runtime.lora.registry import AdapterRegistry
from enginehouse.runtime.metrics import ReplicaLoad
from enginehouse.runtime.options import RuntimeOptions
from enginehouse.runtime.textgen.loading import LoadedCausalLM, load_causal_lm
from enginehouse.runtime.textgen.scheduler import EngineConfig, TextGenerationEngine
from enginehouse.runtime.textgen.serving import TextGenerationServing
from enginehouse.runtime.textgen.tokenizer import SafeTokenizer

log = logging.getLogger(__name__)

# Context used when neither the options nor the model's config say otherwise, and the cap on
# the model's own figure (a 128k-context model would otherwise promise more than a replica holds).
DEFAULT_MAX_MODEL_LEN = 4096


class TextGenerationRunner(ModelRunner):
    task_type = "text-generation"
    serves_adapters = True

    def __init__(self, *, base_model: str, served_name: str, options: RuntimeOptions) -> None:
        super().__init__(base_model=base_model, served_name=served_name, options=options)
        self._engine: TextGenerationEngine | None = None
        self._serving: TextGenerationServing | None = None
        self._registry: AdapterRegistry | None = None
        self.max_model_len = 0

    def load(self) -> None:
        loaded = load_causal_lm(self.base_model, self.options.dtype)
        self.load_from(loaded)

    def load_from(self, loaded: LoadedCausalLM) -> None:
        """Wire everything around an already loaded model (tests build one in-process)."""
        options = self.options
        self.max_model_len = resolve_max_model_len(options.max_model_len, loaded.max_position_embeddings)
        tokenizer = SafeTokenizer(loaded.tokenizer)
        lora = MultiLoRAModel(loaded.model, num_slots=options.max_loras + 1, max_rank=options.max_lora_rank)
        reader = functools.partial(
            read_lora_adapter, targets=lora.targets, max_rank=options.max_lora_rank, dtype=loaded.dtype
        )
        self._registry = AdapterRegistry(reader, options.max_cpu_loras)
        config = EngineConfig(
            max_batch_size=options.max_batch_size,
            max_prefill_tokens=options.max_prefill_tokens,
            eos_token_ids=loaded.eos_token_ids,
        )
        self._engine = TextGenerationEngine(lora, tokenizer, config)
        self._serving = TextGenerationServing(
            engine=self._engine,
            tokenizer=tokenizer,
            registry=self._registry,
            served_name=self.served_name,
            max_model_len=self.max_model_len,
            vocab_size=loaded.vocab_size,
            metrics=self.metrics,
        )

    @property
    def engine(self) -> TextGenerationEngine:
        return loaded(self._engine)

    @property
    def registry(self) -> AdapterRegistry:
        return loaded(self._registry)

    @property
    def serving(self) -> TextGenerationServing:
        return loaded(self._serving)

    def start(self) -> None:
        self.engine.start()

    def stop(self) -> None:
        self.engine.stop()

    def router(self) -> APIRouter:
        return self.serving.router()

    def served_models(self) -> list[tuple[str, str | None]]:
        return [(self.served_name, None), *((name, self.served_name) for name in self.registry.loaded_names())]

    def health(self) -> dict[str, Any]:
        running, waiting = self.engine.counts()
        return {
            "adapters": self.registry.snapshot(),
            "running": running,
            "waiting": waiting,
            "max_model_len": self.max_model_len,
        }

    def load_report(self) -> ReplicaLoad:
        if self._engine is None or self._registry is None:
            return ReplicaLoad()
        running, waiting = self._engine.counts()
        # A slot may still hold an unloaded adapter's weights until it is reused: not counted.
        in_service = self._registry.loaded_ids()
        return ReplicaLoad(
            running=running,
            waiting=waiting,
            device_adapters=len(in_service.intersection(self._engine.slots.resident())),
            host_adapters=len(in_service.intersection(self._registry.host_resident())),
        )

    def load_adapter(self, name: str, path: str) -> dict[str, Any]:
        if name == self.served_name:
            raise ConflictError(f"'{name}' is the base model's served name; pick another adapter name")
        try:
            entry = self.registry.load(name, path)
        except AdapterLoadError as exc:
            raise ValidationFailedError(str(exc), code="adapter_load_failed", param="path") from None
        return {"name": name, "status": entry.status, "path": entry.path, "rank": entry.rank}

    def unload_adapter(self, name: str) -> bool:
        return self.registry.unload(name)


def resolve_max_model_len(requested: int | None, model_limit: int | None) -> int:
    if requested is None:
        return min(model_limit or DEFAULT_MAX_MODEL_LEN, DEFAULT_MAX_MODEL_LEN)
    if model_limit is not None and requested > model_limit:
        raise ReplicaLoadError(
            f"max_model_len {requested} exceeds the model's max_position_embeddings {model_limit}; "
            f"set runtime_options.max_model_len to at most {model_limit}"
        )
    return requested
