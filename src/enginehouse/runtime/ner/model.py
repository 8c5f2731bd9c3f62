"""Loading a token-classification model for NER and running one padded batch."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import AutoModelForTokenClassification, PretrainedConfig, PreTrainedTokenizerBase

from enginehouse.runtime.options import RuntimeOptions
from enginehouse.runtime.single import loading
from enginehouse.runtime.single.loading import ModelLoadError
from enginehouse.runtime.tokenizing import TokenizerThreads

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BaseTraits:
    """What a fine-tune is checked against or inherits from its base model (without its weights)."""

    model_type: str
    tokenizer: PreTrainedTokenizerBase


@dataclass(frozen=True)
class TokenPredictions:
    """Per token of one row: the index of its most probable label and that probability."""

    label_ids: list[int]
    scores: list[float]


@dataclass
class NerModel:
    # None for a base model without a token-classification head (a bare encoder): the engine
    # loads, and its fine-tunes are checked against it, but it finds no entities itself.
    model: nn.Module | None
    tokenizer: PreTrainedTokenizerBase
    device: torch.device
    max_length: int
    labels: tuple[str, ...]  # index → label name (the config's id2label)
    model_type: str
    tokenizers: TokenizerThreads[PreTrainedTokenizerBase]
    unavailable: str | None = None  # why it cannot answer, when ``model`` is None

    @property
    def pad_token_id(self) -> int:
        return int(self.tokenizer.pad_token_id)  # type: ignore[arg-type]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[TokenPredictions]:
        assert self.model is not None, "serving refuses a model without a head"
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits
        top, best = logits.float().softmax(dim=-1).max(dim=-1)
        lengths = attention_mask.sum(dim=1).tolist()
        top, best = top.cpu(), best.cpu()
        return [TokenPredictions(best[i, :n].tolist(), top[i, :n].tolist()) for i, n in enumerate(lengths)]

    def describe(self) -> dict[str, Any]:
        if self.unavailable is not None:
            return {"max_model_len": self.max_length, "labels": [], "unavailable": self.unavailable}
        return {"max_model_len": self.max_length, "labels": list(self.labels)}

    def traits(self) -> BaseTraits:
        return BaseTraits(self.model_type, self.tokenizer)


def open_ner_model(source: str, options: RuntimeOptions, *, base: BaseTraits | None = None) -> NerModel:
    """Load ``source`` as a token-classification model; ``base`` is the engine's base model when
    ``source`` is a fine-tune of it (checked against it; its tokenizer stands in when the
    fine-tune was saved without one). Raises ``ModelLoadError``."""
    loading.check_source(source, fine_tune=base is not None, task="ner")
    config = loading.load_config(source)
    names = loading.architectures(config)
    if names and not any(a.endswith("ForTokenClassification") for a in names):
        if base is None:  # the engine's own base: its fine-tunes bring the head
            return _headless_base(source, options, config, names[0])
        raise ModelLoadError(
            f"{source} is a {names[0]} checkpoint, not a token-classification model; an ner engine "
            "needs a model saved from AutoModelForTokenClassification, with its labels (id2label)"
        )
    loading.check_model_type(config, base.model_type if base is not None else None, source)
    tokenizer = loading.load_tokenizer(source, fallback=base.tokenizer if base is not None else None,
                                       need_offsets=True)
    model, device = loading.load_weights(AutoModelForTokenClassification, source, options.dtype, task="ner",
                                           pack_linear=True)
    id2label = getattr(model.config, "id2label", None) or {}
    labels = tuple(str(id2label.get(i, f"LABEL_{i}")) for i in range(int(model.config.num_labels)))
    loaded = NerModel(
        model=model,
        tokenizer=tokenizer,
        device=device,
        max_length=loading.resolve_max_length(options.max_model_len, tokenizer, config),
        labels=labels,
        model_type=str(config.model_type),
        tokenizers=TokenizerThreads(tokenizer),
    )
    log.info("loaded ner model %s on %s (labels %s)", source, device, ", ".join(labels))
    return loaded


def _headless_base(source: str, options: RuntimeOptions, config: PretrainedConfig, architecture: str) -> NerModel:
    """A base model saved without a token-classification head (a bare encoder such as a
    sentence-transformers model): what its fine-tunes are checked against (model type, tokenizer)
    and nothing more; a call to it is refused with what to do instead."""
    tokenizer = loading.load_tokenizer(source, fallback=None, need_offsets=True)
    reason = (f"the base model is a {architecture} checkpoint without a token-classification head, so it finds "
              "no entities itself; deploy an ner fine-tune onto this engine (a training job or an ner experiment "
              "version) and call that deployment")
    log.info("ner base model %s has no token-classification head: serving its fine-tunes only", source)
    return NerModel(model=None, tokenizer=tokenizer, device=torch.device("cpu"),
                    max_length=loading.resolve_max_length(options.max_model_len, tokenizer, config), labels=(),
                    model_type=str(config.model_type), tokenizers=TokenizerThreads(tokenizer), unavailable=reason)
