"""Load a sequence-classification model and its tokenizer the normal Hugging Face way.

``AutoModelForSequenceClassification`` covers encoders (BERT and kin: the pooled first token) and
decoders (Llama and kin: the last real token), with the checkpoint's own head when it has one. A
checkpoint without a trained head (a bare encoder, a causal LM) still loads: the head is then
freshly initialised, and the runner only lets adapters with their own head use it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedTokenizerBase

from enginehouse.runtime.base import ReplicaLoadError, check_local_base_model
from enginehouse.runtime.options import DtypeOption
from enginehouse.runtime.textgen.loading import pick_device, resolve_dtype

log = logging.getLogger(__name__)

# The cap on a model's own maximum input length when the options do not set one (a long-context
# decoder would otherwise admit inputs far bigger than a replica should take in one forward).
DEFAULT_MAX_MODEL_LEN = 4096
# Tokenizers that do not know their limit report a huge sentinel for model_max_length.
_NO_TOKENIZER_LIMIT = 1_000_000


@dataclass
class LoadedClassifier:
    model: nn.Module
    tokenizer: PreTrainedTokenizerBase
    device: torch.device
    dtype: torch.dtype
    # The longest input the model takes, when its config or tokenizer says.
    max_length: int | None
    pad_token_id: int
    # The base checkpoint's config.json as a dict (labels, problem_type, architectures).
    config: dict[str, Any]
    # Weights the checkpoint did not have and transformers initialised at random.
    missing_keys: set[str] = field(default_factory=set)


def load_sequence_classifier(base_model: str, dtype_option: DtypeOption = "auto") -> LoadedClassifier:
    """Raises ``ReplicaLoadError`` with a message the user can act on."""
    check_local_base_model(base_model)
    device = pick_device()
    try:
        tokenizer = AutoTokenizer.from_pretrained(base_model)
    except Exception as exc:
        raise ReplicaLoadError(f"could not load the tokenizer of base model {base_model!r}: {_short(exc)}") from None
    try:
        model, info = AutoModelForSequenceClassification.from_pretrained(
            base_model, dtype=resolve_dtype(dtype_option, device), output_loading_info=True
        )
    except Exception as exc:
        raise ReplicaLoadError(
            f"could not load base model {base_model!r} as a sequence-classification model: {_short(exc)}"
        ) from None
    model.to(device).eval().requires_grad_(False)
    missing = set(info.get("missing_keys") or ()) | {str(k[0]) if isinstance(k, tuple) else str(k)
                                                     for k in info.get("mismatched_keys") or ()}
    loaded = LoadedClassifier(
        model=model,
        tokenizer=tokenizer,
        device=device,
        dtype=next(model.parameters()).dtype,
        max_length=model_input_limit(model, tokenizer),
        pad_token_id=_pad_token_id(model, tokenizer, base_model),
        config=model.config.to_dict(),
        missing_keys=missing,
    )
    log.info("loaded %s on %s (%s)", base_model, device, loaded.dtype)
    return loaded


def resolve_max_model_len(requested: int | None, model_limit: int | None) -> int:
    if requested is None:
        return min(model_limit or DEFAULT_MAX_MODEL_LEN, DEFAULT_MAX_MODEL_LEN)
    if model_limit is not None and requested > model_limit:
        raise ReplicaLoadError(
            f"max_model_len {requested} exceeds the model's maximum input length {model_limit}; "
            f"set runtime_options.max_model_len to at most {model_limit}"
        )
    return requested


def model_input_limit(model: nn.Module, tokenizer: PreTrainedTokenizerBase) -> int | None:
    """The longest input ``model`` takes, as its config or its tokenizer says; None if neither does."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    limits = [getattr(config, "max_position_embeddings", None)]
    # RoBERTa-style models reserve positions for padding: the tokenizer knows the real limit.
    tokenizer_limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(tokenizer_limit, int) and tokenizer_limit < _NO_TOKENIZER_LIMIT:
        limits.append(tokenizer_limit)
    known = [int(limit) for limit in limits if isinstance(limit, int) and limit > 0]
    return min(known) if known else None


def _pad_token_id(model: nn.Module, tokenizer: PreTrainedTokenizerBase, base_model: str) -> int:
    """The id inputs are padded with. Decoders find each row's last real token by looking for the
    config's pad id, so batches must be padded with exactly that id; a decoder without one gets
    the tokenizer's pad (or end-of-sequence) token, as Hugging Face pipelines do."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    if config.pad_token_id is not None:
        return int(config.pad_token_id)
    candidate = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if candidate is None:
        raise ReplicaLoadError(
            f"base model {base_model!r} defines no padding token (neither pad_token_id in its config "
            "nor a pad or eos token in its tokenizer), so inputs cannot be batched; set pad_token_id "
            "in its config.json"
        )
    config.pad_token_id = int(candidate)
    return int(candidate)


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
