"""How much memory one replica needs (SPEC §4.5), estimated from the base model's ``config.json``
and its safetensors headers, never from the weights themselves. Pure functions over parsed
inputs; ``core.model_files`` reads the files.

The estimate is the sum of five terms, each a deliberate upper bound of what the runtime holds:

- ``weights``: every parameter at the serving dtype (an explicit ``dtype``; else float32 on a
  CPU and the checkpoint's own dtype on a GPU, as the runtime loads them). Integer tensors keep
  their stored size.
- ``kv_cache`` (generation only): 2 (K and V) × layers × KV heads × head dim × bytes ×
  max_model_len × max_batch_size: every running sequence at full context at once.
- ``adapter_slots`` (LoRA task types): the runtime keeps ``max_loras`` + 1 slots (one for the base
  model) at ``max_lora_rank`` in every layer it wraps; we assume every attention and MLP
  projection of every layer is wrapped (A and B matrices: rank × (in + out) each).
- ``activations``: the tokens of one forward step (a prefill chunk for generation, the whole
  batch at full length otherwise) × (4 × hidden + 2 × intermediate) at the serving dtype, plus
  float32 logits over the vocabulary for those tokens when generating.
- ``overhead``: 1 GiB for the framework, the CUDA context and allocator fragmentation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from enginehouse.core.specs import RuntimeOptions
from enginehouse.core.task_types import TaskType

GiB = 2**30
FIXED_OVERHEAD_BYTES = 1 * GiB

# Bytes per element of each safetensors dtype; the first group holds floating-point weights,
# which follow the serving dtype.
FLOAT_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1}
OTHER_DTYPE_BYTES = {"I64": 8, "U64": 8, "I32": 4, "U32": 4, "I16": 2, "U16": 2, "I8": 1, "U8": 1,
                     "BOOL": 1}
DTYPE_BYTES = {**FLOAT_DTYPE_BYTES, **OTHER_DTYPE_BYTES}
SERVING_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
# What the runtime assumes when runtime_options leave a value out (runtime/options.py and
# runtime/textgen/runner.py; a unit test keeps them equal).
RUNTIME_DEFAULTS = {"max_loras": 8, "max_lora_rank": 64, "max_batch_size": 32, "max_prefill_tokens": 2048}
DEFAULT_MAX_MODEL_LEN = 4096
GENERATING_TASK_TYPES = frozenset({TaskType.TEXT_GENERATION, TaskType.VLM_GENERATION})

_CONFIG_KEYS: dict[str, tuple[str, ...]] = {
    "hidden": ("hidden_size", "n_embd", "d_model", "dim"),
    "layers": ("num_hidden_layers", "n_layer", "num_layers", "n_layers", "encoder_layers"),
    "heads": ("num_attention_heads", "n_head", "num_heads", "n_heads", "encoder_attention_heads"),
    "kv_heads": ("num_key_value_heads", "num_kv_heads", "n_kv_heads", "multi_query_group_num"),
    "head_dim": ("head_dim",),
    "intermediate": ("intermediate_size", "n_inner", "ffn_dim", "d_ff", "hidden_dim",
                     "encoder_ffn_dim"),
    "vocab": ("vocab_size",),
    "positions": ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"),
}
# Where multimodal configs keep their language model.
_TEXT_CONFIG_KEYS = ("text_config", "llm_config", "language_config")


@dataclass(frozen=True)
class ModelShape:
    """The transformer stack the config describes (the language part of a multimodal model)."""

    hidden_size: int
    num_layers: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    max_position_embeddings: int | None = None
    torch_dtype: str | None = None  # "bfloat16", … as the config names it


@dataclass(frozen=True)
class ModelFacts:
    """What could be learned about a base model without loading it."""

    shape: ModelShape | None
    parameters_by_dtype: Mapping[str, int] = field(default_factory=dict)  # safetensors dtype → count
    weight_file_bytes: int = 0  # size of the weight files, used when no header could be read
    notes: tuple[str, ...] = ()  # what could not be read, and how the model was sized instead

    @property
    def parameter_count(self) -> int:
        return sum(self.parameters_by_dtype.values())


@dataclass(frozen=True)
class ServingLimits:
    """What one replica is configured to hold, with the runtime's defaults filled in."""

    dtype: str | None  # serving dtype of floating weights; None: as stored
    max_model_len: int
    max_batch_size: int
    max_loras: int  # 0 for task types that serve no LoRA adapters
    max_lora_rank: int
    generates: bool  # keeps a KV cache across steps
    prefill_tokens: int


@dataclass(frozen=True)
class MemoryEstimate:
    terms: dict[str, int]
    inputs: dict[str, Any]  # the figures the terms were computed from, shown with them

    @property
    def total_bytes(self) -> int:
        return sum(self.terms.values())

    def to_dict(self) -> dict[str, Any]:
        return {"total_bytes": self.total_bytes, "terms": dict(self.terms), "inputs": dict(self.inputs)}


def _positive_int(config: Mapping[str, Any], keys: tuple[str, ...]) -> int | None:
    for key in keys:
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _text_config(config: Mapping[str, Any]) -> Mapping[str, Any]:
    for key in _TEXT_CONFIG_KEYS:
        nested = config.get(key)
        if isinstance(nested, Mapping) and _positive_int(nested, _CONFIG_KEYS["hidden"]):
            return nested
    return config


def _config_dtype(*configs: Mapping[str, Any]) -> str | None:
    for config in configs:
        for key in ("torch_dtype", "dtype"):
            value = config.get(key)
            if isinstance(value, str) and value.removeprefix("torch.") in SERVING_DTYPE_BYTES:
                return value.removeprefix("torch.")
    return None


def shape_from_config(config: Mapping[str, Any]) -> ModelShape | None:
    """The stack's dimensions, or None when the config lacks them. Missing KV heads mean
    multi-head attention (as many as the attention heads); a missing head_dim is hidden / heads."""
    text = _text_config(config)
    hidden = _positive_int(text, _CONFIG_KEYS["hidden"])
    layers = _positive_int(text, _CONFIG_KEYS["layers"])
    heads = _positive_int(text, _CONFIG_KEYS["heads"])
    if hidden is None or layers is None or heads is None:
        return None
    return ModelShape(
        hidden_size=hidden,
        num_layers=layers,
        num_attention_heads=heads,
        num_kv_heads=_positive_int(text, _CONFIG_KEYS["kv_heads"]) or heads,
        head_dim=_positive_int(text, _CONFIG_KEYS["head_dim"]) or max(1, hidden // heads),
        intermediate_size=_positive_int(text, _CONFIG_KEYS["intermediate"]) or 4 * hidden,
        vocab_size=_positive_int(text, _CONFIG_KEYS["vocab"]) or _positive_int(config, ("vocab_size",)) or 0,
        max_position_embeddings=_positive_int(text, _CONFIG_KEYS["positions"]),
        torch_dtype=_config_dtype(text, config),
    )


def serving_limits(
    options: RuntimeOptions, task_type: TaskType, device_kind: str, shape: ModelShape | None
) -> ServingLimits:
    """The limits a replica on ``device_kind`` ("cpu" or "gpu") would run with."""
    if options.dtype and options.dtype != "auto":
        dtype: str | None = options.dtype
    else:  # the runtime's "auto": float32 on a CPU, the checkpoint's own dtype on a GPU
        dtype = "float32" if device_kind == "cpu" else (shape.torch_dtype if shape else None)
    max_model_len = options.max_model_len
    if max_model_len is None:
        own = shape.max_position_embeddings if shape else None
        uncapped = task_type is TaskType.VLM_GENERATION and own is not None
        max_model_len = own if uncapped else min(own or DEFAULT_MAX_MODEL_LEN, DEFAULT_MAX_MODEL_LEN)
    return ServingLimits(
        dtype=dtype,
        max_model_len=max_model_len,
        max_batch_size=options.max_batch_size or RUNTIME_DEFAULTS["max_batch_size"],
        max_loras=(options.max_loras or RUNTIME_DEFAULTS["max_loras"]) if task_type.serves_lora else 0,
        max_lora_rank=options.max_lora_rank or RUNTIME_DEFAULTS["max_lora_rank"],
        generates=task_type in GENERATING_TASK_TYPES,
        prefill_tokens=RUNTIME_DEFAULTS["max_prefill_tokens"],
    )


def _stored_float_bytes(facts: ModelFacts) -> int:
    """Bytes per element of the checkpoint's floating weights (its most common float dtype)."""
    if facts.shape and facts.shape.torch_dtype:
        return SERVING_DTYPE_BYTES[facts.shape.torch_dtype]
    floats = {d: n for d, n in facts.parameters_by_dtype.items() if d in FLOAT_DTYPE_BYTES}
    return FLOAT_DTYPE_BYTES[max(floats, key=floats.__getitem__)] if floats else 2


def weights_bytes(facts: ModelFacts, dtype: str | None) -> int:
    if not facts.parameters_by_dtype:  # only file sizes: rescale them to the serving dtype
        stored = _stored_float_bytes(facts)
        serving = SERVING_DTYPE_BYTES[dtype] if dtype else stored
        return facts.weight_file_bytes * serving // stored
    total = 0
    for stored_dtype, count in facts.parameters_by_dtype.items():
        if stored_dtype in FLOAT_DTYPE_BYTES and dtype is not None:
            total += count * SERVING_DTYPE_BYTES[dtype]
        else:
            total += count * DTYPE_BYTES.get(stored_dtype, 4)
    return total


def kv_cache_bytes(shape: ModelShape, limits: ServingLimits, element_bytes: int) -> int:
    per_token = 2 * shape.num_layers * shape.num_kv_heads * shape.head_dim * element_bytes
    return per_token * limits.max_model_len * limits.max_batch_size


def lora_dims_per_layer(shape: ModelShape) -> int:
    """Sum of (in + out) over one layer's projections: q, k, v, o and the gated MLP's three."""
    h, i = shape.hidden_size, shape.intermediate_size
    q_width = shape.num_attention_heads * shape.head_dim
    kv_width = shape.num_kv_heads * shape.head_dim
    attention = (h + q_width) + 2 * (h + kv_width) + (q_width + h)
    mlp = 2 * (h + i) + (i + h)
    return attention + mlp


def adapter_slot_bytes(shape: ModelShape, limits: ServingLimits, element_bytes: int) -> int:
    if limits.max_loras == 0:
        return 0
    slots = limits.max_loras + 1  # slot 0 is the base model's, allocated all the same
    return slots * limits.max_lora_rank * shape.num_layers * lora_dims_per_layer(shape) * element_bytes


def activation_bytes(shape: ModelShape, limits: ServingLimits, element_bytes: int) -> int:
    if limits.generates:
        tokens = max(limits.prefill_tokens, limits.max_batch_size)
        logits = tokens * shape.vocab_size * 4
    else:
        tokens = limits.max_batch_size * limits.max_model_len
        logits = 0
    return tokens * (4 * shape.hidden_size + 2 * shape.intermediate_size) * element_bytes + logits


def estimate_memory(facts: ModelFacts, limits: ServingLimits) -> MemoryEstimate:
    element_bytes = SERVING_DTYPE_BYTES[limits.dtype] if limits.dtype else _stored_float_bytes(facts)
    shape = facts.shape
    terms = {
        "weights": weights_bytes(facts, limits.dtype),
        "kv_cache": kv_cache_bytes(shape, limits, element_bytes) if shape and limits.generates else 0,
        "adapter_slots": adapter_slot_bytes(shape, limits, element_bytes) if shape else 0,
        "activations": activation_bytes(shape, limits, element_bytes) if shape else 0,
        "overhead": FIXED_OVERHEAD_BYTES,
    }
    inputs: dict[str, Any] = {
        "parameters": facts.parameter_count or None,
        "dtype": limits.dtype or f"as stored ({element_bytes} bytes)",
        "max_model_len": limits.max_model_len,
        "max_batch_size": limits.max_batch_size,
        "max_loras": limits.max_loras,
        "max_lora_rank": limits.max_lora_rank,
    }
    return MemoryEstimate(terms, inputs)
