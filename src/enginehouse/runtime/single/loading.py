"""Checks and steps shared by the loaders of single-model task types (embedding, NER).

Each loader raises ``ModelLoadError`` with a sentence the user can act on. The runner turns it
into ``ReplicaLoadError`` for the base model (the replica cannot come up) and into a 422 for a
fine-tune (the base model keeps serving).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoTokenizer, PretrainedConfig, PreTrainedTokenizerBase

from enginehouse.core.model_names import looks_like_local_path
from enginehouse.runtime.options import DtypeOption
from enginehouse.runtime.packed_linear import pack_linear_layers
from enginehouse.runtime.textgen.loading import pick_device, resolve_dtype

log = logging.getLogger(__name__)

# Used when neither the options, the tokenizer nor the config give a length; also the cap on
# the model's own figure, as for text generation.
DEFAULT_MAX_LENGTH = 4096
# Tokenizers without a configured limit report a huge sentinel (int(1e30)); anything above this
# is treated as "not configured".
_UNSET_LENGTH = 1_000_000
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "tokenizer.model",
                    "sentencepiece.bpe.model", "spiece.model", "vocab.json")


class ModelLoadError(Exception):
    """The model at a path cannot be served by this engine; the message says why."""


def check_source(source: str, *, fine_tune: bool, task: str) -> None:
    """Refuse what can only be a local path but is not a usable model directory.

    A fine-tune must be a local directory as ``save_pretrained`` writes it; a base model may also
    be a Hub id (resolved through the Hugging Face cache by ``from_pretrained``).
    """
    path = Path(source).expanduser()
    if not (fine_tune or looks_like_local_path(source)):
        return
    if not path.exists():
        raise ModelLoadError(f"model directory {source} does not exist")
    if not path.is_dir():
        raise ModelLoadError(f"{source} is not a directory (expected a model directory from save_pretrained)")
    if (path / "config.json").is_file() or (path / "modules.json").is_file():
        return
    if (path / "adapter_config.json").is_file():
        raise ModelLoadError(
            f"{source} holds a LoRA adapter, but {task} engines serve whole fine-tuned models; merge "
            "the adapter into its model (merge_and_unload) and save_pretrained the result"
        )
    raise ModelLoadError(f"{source} is not a model directory (no config.json); save the model with save_pretrained")


def load_config(source: str) -> PretrainedConfig:
    try:
        return AutoConfig.from_pretrained(source)
    except Exception as exc:
        raise ModelLoadError(f"could not read the model config of {source}: {short(exc)}") from None


def architectures(config: PretrainedConfig) -> list[str]:
    return [str(a) for a in (getattr(config, "architectures", None) or [])]


def check_model_type(config: PretrainedConfig, base_model_type: str | None, source: str) -> None:
    """A fine-tune must be of its engine's base model's kind: anything else is a wrong base model."""
    model_type = getattr(config, "model_type", None)
    if base_model_type is not None and model_type != base_model_type:
        raise ModelLoadError(
            f"{source} is a {model_type} model but this engine's base model is a {base_model_type} "
            "model; deploy a fine-tune of the engine's base model, or create an engine for this model"
        )


def load_tokenizer(
    source: str, *, fallback: PreTrainedTokenizerBase | None = None, need_offsets: bool = False
) -> PreTrainedTokenizerBase:
    """The tokenizer saved with the model. A fine-tune saved without one (training scripts often
    save the weights only) uses ``fallback``, its base model's tokenizer."""
    if fallback is not None and not any((Path(source) / name).is_file() for name in _TOKENIZER_FILES):
        log.info("%s has no tokenizer files; using the base model's tokenizer", source)
        return fallback
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except Exception as exc:
        raise ModelLoadError(f"could not load the tokenizer of {source}: {short(exc)}") from None
    if need_offsets and not tokenizer.is_fast:
        raise ModelLoadError(
            f"the tokenizer of {source} cannot report character offsets (it is not a fast, "
            "tokenizers-backed tokenizer); save the model with its tokenizer.json"
        )
    if tokenizer.pad_token_id is None:
        # Padding rows of a batch needs some id; masked positions never reach the output.
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    if tokenizer.pad_token_id is None:
        raise ModelLoadError(f"the tokenizer of {source} has no pad, end or unknown token to pad batches with")
    return tokenizer


def load_weights(
    auto_class: Any, source: str, dtype_option: DtypeOption, *, task: str, optional: tuple[str, ...] = (),
    pack_linear: bool = False,
) -> tuple[nn.Module, torch.device]:
    """``auto_class.from_pretrained`` on this replica's device; refuses checkpoints that lack
    weights the model needs (they would be random), except names starting with ``optional``.
    ``pack_linear``: on a CPU, lay out each float32 linear layer's weight once for oneDNN
    (``runtime/packed_linear.py``), for models whose code only ever calls their linear layers."""
    device = pick_device()
    try:
        model, info = auto_class.from_pretrained(
            source, dtype=resolve_dtype(dtype_option, device), output_loading_info=True
        )
    except Exception as exc:
        raise ModelLoadError(f"could not load the weights of {source} as a {task} model: {short(exc)}") from None
    missing = sorted(k for k in info.get("missing_keys", ()) if not any(o in k for o in optional))
    if missing:
        shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
        raise ModelLoadError(
            f"{source} lacks weights a {task} model needs ({shown}); it was not saved for this task type"
        )
    model.to(device).eval().requires_grad_(False)
    if pack_linear:
        pack_linear_layers(model)
    return model, device


def resolve_max_length(
    requested: int | None, tokenizer: PreTrainedTokenizerBase, config: PretrainedConfig, declared: int | None = None
) -> int:
    """The longest input (in tokens, special tokens included) the model takes.

    ``declared`` is what the model's own files say beyond the tokenizer (sentence-transformers'
    ``max_seq_length``); then the tokenizer's ``model_max_length``; then the config's
    ``max_position_embeddings``, which also caps the others: a tokenizer saved with a larger
    limit than the model's position table would let an input overrun it (an error in the forward).
    ``requested`` (``runtime_options.max_model_len``) may lower it.
    """
    limit = declared
    if limit is None and 0 < (tokenizer.model_max_length or 0) < _UNSET_LENGTH:
        limit = int(tokenizer.model_max_length)
    positions = getattr(config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        limit = min(limit or positions, positions)
    limit = min(limit or DEFAULT_MAX_LENGTH, DEFAULT_MAX_LENGTH)
    if requested is None:
        return limit
    if requested > limit:
        raise ModelLoadError(
            f"max_model_len {requested} exceeds the model's maximum input length {limit}; "
            f"set runtime_options.max_model_len to at most {limit}"
        )
    return requested


def short(exc: Exception) -> str:
    # Hub and loading errors run to many lines; the first says what went wrong.
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
