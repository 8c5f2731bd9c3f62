"""Load a causal language model and its tokenizer the normal Hugging Face way.

``base_model`` is a local directory or a Hub id resolved through the Hugging Face cache, exactly
as ``from_pretrained`` does it, so a model that works in a notebook works here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from enginehouse.runtime.base import ReplicaLoadError, check_local_base_model
from enginehouse.runtime.options import DtypeOption

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class LoadedCausalLM:
    model: nn.Module
    tokenizer: PreTrainedTokenizerBase
    device: torch.device
    dtype: torch.dtype
    # The longest context the model was built for, when its config says.
    max_position_embeddings: int | None
    eos_token_ids: frozenset[int]
    vocab_size: int
    # Width of the logits (the output embedding's rows; usually vocab_size).
    logits_size: int


def pick_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def resolve_dtype(option: DtypeOption, device: torch.device) -> torch.dtype | str:
    if option != "auto":
        return _DTYPES[option]
    # Half precision on CPU is slow and loses accuracy for little gain; on a GPU keep the
    # checkpoint's own dtype.
    return torch.float32 if device.type == "cpu" else "auto"


def load_causal_lm(base_model: str, dtype_option: DtypeOption = "auto") -> LoadedCausalLM:
    """Raises ``ReplicaLoadError`` with a message the user can act on."""
    check_local_base_model(base_model)
    device = pick_device()
    dtype = resolve_dtype(dtype_option, device)
    try:
        tokenizer = AutoTokenizer.from_pretrained(base_model)
    except Exception as exc:
        message = f"could not load the tokenizer of base model {base_model!r}: {_short(exc)}"
        raise ReplicaLoadError(message) from None
    try:
        model = AutoModelForCausalLM.from_pretrained(base_model, dtype=dtype)
    except Exception as exc:
        raise ReplicaLoadError(
            f"could not load base model {base_model!r} as a text-generation (causal LM) model: {_short(exc)}"
        ) from None
    model.to(device).eval().requires_grad_(False)
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    loaded = LoadedCausalLM(
        model=model,
        tokenizer=tokenizer,
        device=device,
        dtype=next(model.parameters()).dtype,
        max_position_embeddings=getattr(config, "max_position_embeddings", None),
        eos_token_ids=_eos_ids(model, tokenizer),
        vocab_size=int(model.get_input_embeddings().num_embeddings),
        logits_size=_logits_size(model),
    )
    log.info("loaded %s on %s (%s)", base_model, device, loaded.dtype)
    return loaded


def _eos_ids(model: nn.Module, tokenizer: PreTrainedTokenizerBase) -> frozenset[int]:
    ids: set[int] = set()
    generation_config = getattr(model, "generation_config", None)
    configured = getattr(generation_config, "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif isinstance(configured, (list, tuple)):
        ids.update(int(i) for i in configured)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return frozenset(ids)


def _logits_size(model: nn.Module) -> int:
    output = model.get_output_embeddings()
    weight = getattr(output, "weight", None)
    if weight is not None:
        return int(weight.shape[0])
    return int(model.get_input_embeddings().num_embeddings)


def _short(exc: Exception) -> str:
    # Hub errors run to many lines; the first says what went wrong.
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
