"""Loading a token-classification model for NER and running one padded batch."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import AutoModelForTokenClassification, PreTrainedTokenizerBase

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
    model: nn.Module
    tokenizer: PreTrainedTokenizerBase
    device: torch.device
    max_length: int
    labels: tuple[str, ...]  # index → label name (the config's id2label)
    model_type: str
    tokenizers: TokenizerThreads[PreTrainedTokenizerBase]

    @property
    def pad_token_id(self) -> int:
        return int(self.tokenizer.pad_token_id)  # type: ignore[arg-type]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[TokenPredictions]:
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits
        top, best = logits.float().softmax(dim=-1).max(dim=-1)
        lengths = attention_mask.sum(dim=1).tolist()
        top, best = top.cpu(), best.cpu()
        return [TokenPredictions(best[i, :n].tolist(), top[i, :n].tolist()) for i, n in enumerate(lengths)]

    def describe(self) -> dict[str, Any]:
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
        raise ModelLoadError(
            f"{source} is a {names[0]} checkpoint, not a token-classification model; an ner engine "
            "needs a model saved from AutoModelForTokenClassification, with its labels (id2label)"
        )
    loading.check_model_type(config, base.model_type if base is not None else None, source)
    tokenizer = loading.load_tokenizer(source, fallback=base.tokenizer if base is not None else None,
                                       need_offsets=True)
    model, device = loading.load_weights(AutoModelForTokenClassification, source, options.dtype, task="ner")
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
