"""The text-generation model runner: a causal LM, many LoRA adapters, one batching engine."""

from __future__ import annotations

import functools

from enginehouse.runtime.base import ReplicaLoadError
from enginehouse.runtime.lora.layers import MultiLoRAModel
from enginehouse.runtime.lora.peft_format import read_lora_adapter
from enginehouse.runtime.lora.registry import AdapterRegistry
from enginehouse.runtime.lora.runner import LoRARunner
from enginehouse.runtime.packed_linear import pack_linear_layers
from enginehouse.runtime.textgen.grammar import try_grammar_engine
from enginehouse.runtime.textgen.loading import LoadedCausalLM, load_causal_lm
from enginehouse.runtime.textgen.scheduler import EngineConfig, TextGenerationEngine
from enginehouse.runtime.textgen.serving import TextGenerationServing
from enginehouse.runtime.textgen.tokenizer import SafeTokenizer


# Context used when neither the options nor the model's config say otherwise, and the cap on
# the model's own figure (a 128k-context model would otherwise promise more than a replica holds).
DEFAULT_MAX_MODEL_LEN = 4096


class TextGenerationRunner(LoRARunner[TextGenerationEngine, TextGenerationServing]):
    task_type = "text-generation"

    def load(self) -> None:
        loaded = load_causal_lm(self.base_model, self.options.dtype)
        self.load_from(loaded)

    def load_from(self, loaded: LoadedCausalLM) -> None:
        """Wire everything around an already loaded model (tests build one in-process)."""
        options = self.options
        self.max_model_len = resolve_max_model_len(options.max_model_len, loaded.max_position_embeddings)
        tokenizer = SafeTokenizer(loaded.tokenizer)
        lora = MultiLoRAModel(loaded.model, num_slots=options.max_loras + 1, max_rank=options.max_lora_rank)
        pack_linear_layers(loaded.model)  # on a CPU; after the LoRA targets are read: they see plain layers
        reader = functools.partial(
            read_lora_adapter, targets=lora.targets, max_rank=options.max_lora_rank, dtype=loaded.dtype
        )
        self._registry = AdapterRegistry(reader, options.max_cpu_loras)
        config = EngineConfig(
            max_batch_size=options.max_batch_size,
            max_prefill_tokens=options.max_prefill_tokens,
            eos_token_ids=loaded.eos_token_ids,
            vocab_size=loaded.logits_size,
        )
        grammar, no_grammar_reason = try_grammar_engine(loaded.tokenizer, loaded.logits_size, loaded.eos_token_ids)
        self._worker = TextGenerationEngine(lora, tokenizer, config, grammar)
        self._serving = TextGenerationServing(
            engine=self._worker,
            tokenizer=tokenizer,
            registry=self._registry,
            served_name=self.served_name,
            max_model_len=self.max_model_len,
            vocab_size=loaded.vocab_size,
            metrics=self.metrics,
            grammar=grammar,
            no_grammar_reason=no_grammar_reason,
        )

    @property
    def engine(self) -> TextGenerationEngine:
        return self.worker

    def step_report(self) -> dict[str, float] | None:
        return self._worker.timers.snapshot() if self._worker is not None else None


def resolve_max_model_len(requested: int | None, model_limit: int | None) -> int:
    if requested is None:
        return min(model_limit or DEFAULT_MAX_MODEL_LEN, DEFAULT_MAX_MODEL_LEN)
    if model_limit is not None and requested > model_limit:
        raise ReplicaLoadError(
            f"max_model_len {requested} exceeds the model's max_position_embeddings {model_limit}; "
            f"set runtime_options.max_model_len to at most {model_limit}"
        )
    return requested
