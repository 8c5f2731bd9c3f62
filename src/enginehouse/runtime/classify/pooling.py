"""Sentence pooling: a head that reads the mean of the last hidden state, not the pooled first token.

Sentence-transformers encoders (all-MiniLM-L6-v2 and kin) were trained so that the attention-masked
mean of the last hidden state, L2-normalised, is the sentence embedding; their pooler (BERT's
dense + tanh over ``[CLS]``) was never trained for that, and separates meanings far worse. A head
built from such embeddings (a zero-shot head made of class descriptions) or trained on them must
see the same vector. A checkpoint says so in its ``config.json``: ``"sentence_pooling": "mean"``
and ``"sentence_normalize": true``; without them the model's own pooled output is used.

The vector is changed where the model pools: a forward hook on the backbone's pooler replaces its
output, for the rows that ask, with the masked mean of the pooler's input (the last hidden state of
a BERT-like encoder). The rest of the model's forward (dropout, the head) runs unchanged, and the
other rows keep the pooler's own output untouched. The mask is the one the backbone was called
with, taken by a forward pre-hook on it. Module names stay as they are, so LoRA weights and saved
heads keep their keys.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.hooks import RemovableHandle

from enginehouse.runtime.lora.layers import LoRARouting

POOLING_KEY = "sentence_pooling"
NORMALIZE_KEY = "sentence_normalize"
MEAN = "mean"

# Per-row pooling codes: the model's own output, the mean, the normalised mean.
_MODEL, _MEAN, _NORMALIZED = 0, 1, 2


class PoolingError(ValueError):
    """A config.json whose pooling markers cannot be read; the message says which."""


class PoolingUnsupported(ValueError):
    """A base model whose head does not read a pooler that mean pooling could stand in for."""


@dataclass(frozen=True)
class SentencePooling:
    """A head that reads the masked mean of the last hidden state (L2-normalised when asked)."""

    normalize: bool

    @property
    def code(self) -> int:
        return _NORMALIZED if self.normalize else _MEAN

    def mark(self, config: Any) -> None:
        """Write the markers onto a transformers config, so ``save_pretrained`` saves them."""
        setattr(config, POOLING_KEY, MEAN)
        setattr(config, NORMALIZE_KEY, self.normalize)


def read_sentence_pooling(config: Mapping[str, Any]) -> SentencePooling | None:
    """The pooling a config.json's content declares; None for the model's own pooled output."""
    mode = config.get(POOLING_KEY)
    if mode is None:
        return None
    if mode != MEAN:
        raise PoolingError(f"{POOLING_KEY} {mode!r} in config.json is not supported; the one value is {MEAN!r}")
    normalize = config.get(NORMALIZE_KEY, False)
    if not isinstance(normalize, bool):
        raise PoolingError(f"{NORMALIZE_KEY} in config.json must be true or false, got {normalize!r}")
    return SentencePooling(normalize)


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor, *, normalize: bool = False) -> torch.Tensor:
    """``[rows, hidden]`` means over each row's real tokens, in float32, as sentence-transformers
    computes them (its ``Pooling`` and ``Normalize`` modules)."""
    weights = mask.to(device=hidden.device, dtype=torch.float32).unsqueeze(-1)
    mean = (hidden.float() * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
    return F.normalize(mean, p=2, dim=-1) if normalize else mean


def find_pooler(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """(backbone, pooler) of a transformers sequence-classification model whose head reads the
    backbone's pooled output (BERT and kin)."""
    backbone = getattr(model, "base_model", None)
    pooler = getattr(backbone, "pooler", None) if backbone is not model else None
    if not isinstance(backbone, nn.Module) or not isinstance(pooler, nn.Module):
        raise PoolingUnsupported(
            f"{type(model).__name__} has no pooler over its last hidden state that mean pooling could stand "
            "in for (sentence_pooling 'mean' works on BERT-like encoders, not on decoders or models that "
            "pool inside their head)"
        )
    return backbone, pooler


def pooler_problem(model: nn.Module, probe_ids: torch.Tensor) -> str | None:
    """Why mean pooling cannot be used on ``model``, or None when it can: the pooler must take the
    last hidden state ``[rows, tokens, hidden]`` and give ``[rows, hidden]``, which a probe
    forward over ``probe_ids`` observes."""
    try:
        _, pooler = find_pooler(model)
    except PoolingUnsupported as exc:
        return str(exc)
    seen: list[tuple[tuple[int, ...], tuple[int, ...]]] = []

    def observe(_: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if args and isinstance(args[0], torch.Tensor) and isinstance(output, torch.Tensor):
            seen.append((tuple(args[0].shape), tuple(output.shape)))

    handle = pooler.register_forward_hook(observe)
    try:
        with torch.inference_mode():
            model(input_ids=probe_ids, attention_mask=torch.ones_like(probe_ids))
    finally:
        handle.remove()
    rows, tokens = probe_ids.shape
    hidden, pooled = seen[0] if seen else ((), ())
    if not (len(hidden) == 3 and hidden[:2] == (rows, tokens) and pooled == (rows, hidden[2])):
        return (f"the pooler of {type(model).__name__} does not take the last hidden state, so mean pooling "
                "cannot stand in for it")
    return None


class _PoolerHooks:
    """Hooks on a backbone and its pooler that replace the pooled output of the rows ``_codes``
    picks with their masked mean; ``remove`` takes them off again."""

    def __init__(self, model: nn.Module) -> None:
        backbone, pooler = find_pooler(model)
        self._mask: torch.Tensor | None = None
        self._handles: list[RemovableHandle] = [
            backbone.register_forward_pre_hook(self._capture, with_kwargs=True),
            backbone.register_forward_hook(self._release, always_call=True),
            pooler.register_forward_hook(self._replace),
        ]

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _codes(self, rows: int, device: torch.device) -> torch.Tensor | None:
        """Each row's pooling code (``[rows]``); None when every row keeps the model's own."""
        raise NotImplementedError

    def _capture(self, _: nn.Module, args: tuple[Any, ...], kwargs: MutableMapping[str, Any]) -> None:
        # transformers models take the mask as ``attention_mask``, second after ``input_ids``.
        mask = kwargs.get("attention_mask")
        if mask is None and len(args) > 1:
            mask = args[1]
        self._mask = mask

    def _release(self, *_: Any) -> None:
        self._mask = None

    def _replace(self, _: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor | None:
        hidden = args[0]
        codes = self._codes(hidden.shape[0], hidden.device)
        if codes is None:
            return None  # the pooler's own output, as it is
        mask = self._mask if self._mask is not None else torch.ones(hidden.shape[:2], device=hidden.device)
        if hidden.ndim != 3 or mask.shape != hidden.shape[:2] or output.shape != (hidden.shape[0], hidden.shape[2]):
            raise RuntimeError(f"mean pooling got hidden states {tuple(hidden.shape)}, mask {tuple(mask.shape)} "
                               f"and pooled output {tuple(output.shape)}")
        rows = (codes != _MODEL).nonzero().flatten()
        mean = masked_mean(hidden.index_select(0, rows), mask.index_select(0, rows))
        normalized = (codes.index_select(0, rows) == _NORMALIZED).unsqueeze(-1)
        mean = torch.where(normalized, F.normalize(mean, p=2, dim=-1), mean).to(output.dtype)
        if rows.numel() == hidden.shape[0]:
            return mean
        return output.index_copy(0, rows, mean)


class MeanPooling(_PoolerHooks):
    """Every row reads the (normalised) mean: a model trained or evaluated with mean pooling."""

    def __init__(self, model: nn.Module, pooling: SentencePooling) -> None:
        super().__init__(model)
        self.pooling = pooling

    def _codes(self, rows: int, device: torch.device) -> torch.Tensor | None:
        return torch.full((rows,), self.pooling.code, dtype=torch.long, device=device)


class RoutedMeanPooling(_PoolerHooks):
    """Each row pools as its slot's adapter declares; slot 0 (the base model) and adapters that
    declare nothing keep the pooler's own output. Only the batcher thread writes slots."""

    def __init__(self, model: nn.Module, routing: LoRARouting, num_slots: int) -> None:
        super().__init__(model)
        self.routing = routing
        self._slot_codes = [_MODEL] * num_slots
        self._table: torch.Tensor | None = None  # the codes on the model's device, made on first use

    def write_slot(self, slot: int, pooling: SentencePooling | None) -> None:
        self._slot_codes[slot] = _MODEL if pooling is None else pooling.code
        self._table = None

    def _codes(self, rows: int, device: torch.device) -> torch.Tensor | None:
        slot_ids = self.routing.slot_ids
        if slot_ids is None or not any(self._slot_codes[s] != _MODEL for s in self.routing.active):
            return None
        if self._table is None or self._table.device != device:
            self._table = torch.tensor(self._slot_codes, dtype=torch.long, device=device)
        return self._table.index_select(0, slot_ids.to(device))
