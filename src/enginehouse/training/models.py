"""Loading the base model for training, and the longest row it and the parameters allow."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import nn
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from enginehouse.runtime.classify.loading import model_input_limit
from enginehouse.training.data import DatasetError
from enginehouse.training.errors import TrainingError
from enginehouse.training.parameters import TrainingParameters

M = TypeVar("M", bound=nn.Module)


@dataclass(frozen=True)
class LengthLimit:
    """The longest row in tokens, why (for the message), and whether longer rows are cut."""

    tokens: int
    why: str
    truncation: bool

    def check(self, split_name: str, lengths: Sequence[tuple[int, int]]) -> list[int]:
        """The indices of the rows over the limit, given each row's ``(line, tokens)``; a
        ``DatasetError`` naming the first of them when they may not be cut."""
        over = [i for i, (_, tokens) in enumerate(lengths) if tokens > self.tokens]
        if over and not self.truncation:
            line, tokens = lengths[over[0]]
            more = f"; {len(over) - 1} more row(s) are too long as well" if len(over) > 1 else ""
            raise DatasetError(
                f"{split_name} line {line}: {tokens} tokens, longer than {self.why} (set truncation: true "
                f"to cut such rows{more})"
            )
        return over


def length_limit(parameters: TrainingParameters, model: nn.Module, tokenizer: PreTrainedTokenizerBase) -> LengthLimit:
    model_limit = model_input_limit(model, tokenizer)
    if model_limit is not None and model_limit < parameters.max_seq_length:
        return LengthLimit(model_limit, f"the base model's maximum input length of {model_limit} tokens",
                           parameters.truncation)
    return LengthLimit(parameters.max_seq_length, f"max_seq_length {parameters.max_seq_length}",
                       parameters.truncation)


def pick_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def load_tokenizer(base_model: str) -> PreTrainedTokenizerBase:
    try:
        return AutoTokenizer.from_pretrained(base_model)
    except Exception as exc:  # transformers raises many types for a missing or broken model
        raise TrainingError(f"could not load the tokenizer of base model {base_model!r}: {_short(exc)}") from None


def load_model(loader: Callable[..., M], base_model: str, what: str, **kwargs: Any) -> M:
    """``loader(base_model, **kwargs)`` (an ``Auto*.from_pretrained``) in float32, which LoRA
    training on a CPU needs; a failure is a ``TrainingError`` naming the model."""
    try:
        model = loader(base_model, dtype=torch.float32, **kwargs)
    except Exception as exc:
        raise TrainingError(f"could not load base model {base_model!r} as {what}: {_short(exc)}") from None
    return model


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
