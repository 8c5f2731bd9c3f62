"""NER: LoRA on the backbone of a token-classification model, its head trained in full, saved as
one whole model, since an NER replica serves one model at a time (SPEC §3).

Labels are plain entity types plus ``O`` (outside): a token takes the type of the entity its
first character falls in. A replica groups tokens into words and words into entities the same way
whatever the scheme (``runtime.ner.entities``), and the test results are scored through that same
grouping: precision, recall and F1 of whole entities (exact span and type), beside the per-token
accuracy and the loss.

A checkpoint is the model with LoRA merged into its weights, its ``config.json`` (``id2label``,
the ``*ForTokenClassification`` architecture) and the tokenizer, a directory any NER engine on
the same base model (or ``AutoModelForTokenClassification`` anywhere) loads as it is.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from peft import PeftModel
from torch import nn
from transformers import AutoModelForTokenClassification, PreTrainedModel, PreTrainedTokenizerBase

from enginehouse.runtime.ner.entities import group_entities, trim
from enginehouse.training.batching import IGNORED, Encoded, evaluation_batches, per_token_batch
from enginehouse.training.cancel import Cancellation
from enginehouse.training.data import OUTSIDE_LABEL, EntitySpan, Example, NerExample
from enginehouse.training.errors import TrainingError
from enginehouse.training.lora import attach_lora
from enginehouse.training.models import LengthLimit, length_limit, load_model, load_tokenizer
from enginehouse.training.parameters import TrainingParameters
from enginehouse.training.sequence_classification import head_modules

log = logging.getLogger(__name__)
Batch = dict[str, torch.Tensor]


def ner_labels(entity_types: Sequence[str]) -> list[str]:
    """A checkpoint's labels, in its head's order: outside first, then each entity type."""
    return [OUTSIDE_LABEL, *entity_types]


@dataclass(frozen=True)
class TokenRow(Encoded):
    """A tokenised row with what scoring its entities needs: the text, where each token is in it,
    and the entities it should find."""

    text: str = ""
    offsets: tuple[tuple[int, int], ...] = ()
    word_ids: tuple[int | None, ...] = ()
    special: tuple[int, ...] = ()
    gold: frozenset[tuple[int, int, str]] = frozenset()


class TokenTask:
    def __init__(self, tokenizer: PreTrainedTokenizerBase, labels: Sequence[str], limit: LengthLimit,
                 pad_id: int) -> None:
        if not tokenizer.is_fast:
            raise TrainingError("NER training needs a fast tokenizer (one that reports each token's characters)")
        self.tokenizer = tokenizer
        self.labels = list(labels)
        self.label_ids = {label: i for i, label in enumerate(labels)}
        self.limit = limit
        self.pad_id = pad_id

    def encode(self, examples: Sequence[Example], split_name: str) -> list[Encoded]:
        rows = [e for e in examples if isinstance(e, NerExample)]
        encodings = self._tokenize([e.text for e in rows])
        over = self.limit.check(split_name, [(e.line, len(enc.ids)) for e, enc in zip(rows, encodings, strict=True)])
        if over:
            # Through the tokenizer again, so the cut keeps the special tokens (BERT's [SEP]).
            for i, cut in zip(over, self._tokenize([rows[i].text for i in over], truncate=True), strict=True):
                encodings[i] = cut
            log.info("%s: cut %d row(s) to %d tokens", split_name, len(over), self.limit.tokens)
        cut_rows = set(over)
        return [self._encode(e, encodings[i], cut=i in cut_rows) for i, e in enumerate(rows)]

    def _tokenize(self, texts: list[str], *, truncate: bool = False) -> list[Any]:
        """Each text's ``tokenizers.Encoding``: ids, character offsets, special-token mask, words."""
        options: dict[str, Any] = {"truncation": True, "max_length": self.limit.tokens} if truncate else {}
        return list(self.tokenizer(texts, add_special_tokens=True, **options).encodings or [])

    def _encode(self, example: NerExample, encoding: Any, *, cut: bool) -> TokenRow:
        offsets = tuple((int(a), int(b)) for a, b in encoding.offsets)
        special = tuple(int(s) for s in encoding.special_tokens_mask)
        targets = [IGNORED if special[i] or end <= start else self.label_ids[_label_at(example.entities, start)]
                   for i, (start, end) in enumerate(offsets)]
        # A row cut short keeps only the entities that end in what is left of it.
        last_char = max((end for (_, end), s in zip(offsets, special, strict=True) if not s), default=0)
        gold = frozenset((e.start, e.end, e.label) for e in (_trimmed(example.text, s) for s in example.entities)
                         if e is not None and (not cut or e.end <= last_char))
        return TokenRow(example.line, list(encoding.ids), targets, text=example.text, offsets=offsets,
                        word_ids=tuple(encoding.word_ids), special=special, gold=gold)

    def batch(self, rows: Sequence[Encoded], device: torch.device) -> Batch:
        return per_token_batch(rows, self.pad_id, device)

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        logits = self._logits(model, batch)
        return F.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=IGNORED)

    def evaluate(self, model: nn.Module, rows: Sequence[Encoded], batch_size: int, device: torch.device,
                 cancel: Cancellation) -> dict[str, float]:
        loss_sum, counted, correct = 0.0, 0, 0
        found = expected = hits = 0
        for indices in evaluation_batches([len(r.input_ids) for r in rows], batch_size):
            cancel.check()
            chunk = [rows[i] for i in indices]
            batch = self.batch(chunk, device)
            logits = self._logits(model, batch)
            targets = batch["labels"]
            scored = targets != IGNORED
            loss_sum += float(F.cross_entropy(logits[scored], targets[scored], reduction="sum"))
            counted += int(scored.sum())
            probabilities, best = logits.softmax(dim=-1).max(dim=-1)
            correct += int((best == targets)[scored].sum())
            for i, row in enumerate(chunk):
                assert isinstance(row, TokenRow)
                predicted = self._entities(row, best[i, :len(row.input_ids)].tolist(),
                                           probabilities[i, :len(row.input_ids)].tolist())
                found, expected = found + len(predicted), expected + len(row.gold)
                hits += len(predicted & row.gold)
        precision = hits / found if found else 0.0
        recall = hits / expected if expected else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return {"eval_loss": loss_sum / max(counted, 1), "accuracy": correct / max(counted, 1),
                "precision": precision, "recall": recall, "f1": f1}

    def _entities(self, row: TokenRow, label_ids: list[int], scores: list[float]) -> set[tuple[int, int, str]]:
        """The entities a replica would answer for ``row`` given these per-token predictions."""
        labels = [self.labels[i] for i in label_ids]
        entities = group_entities(row.text, labels, scores, row.offsets, row.word_ids, row.special)
        return {(e.start, e.end, e.label) for e in entities}

    def save(self, model: nn.Module, directory: Path) -> None:
        """The whole model, LoRA merged in (into a copy: training goes on with the adapter)."""
        whole: Any = copy.deepcopy(model).merge_and_unload() if isinstance(model, PeftModel) else model
        whole.save_pretrained(str(directory))
        self.tokenizer.save_pretrained(str(directory))

    @staticmethod
    def _logits(model: nn.Module, batch: Batch) -> torch.Tensor:
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()


def _label_at(entities: Sequence[EntitySpan], char: int) -> str:
    for entity in entities:
        if entity.start <= char < entity.end:
            return entity.label
    return OUTSIDE_LABEL


def _trimmed(text: str, span: EntitySpan) -> EntitySpan | None:
    """The span without surrounding whitespace, as a replica reports an entity."""
    start, end = trim(text, span.start, span.end)
    return EntitySpan(start, end, span.label) if start < end else None


def load_token_model(source: str, parameters: TrainingParameters, labels: Sequence[str] | None
                     ) -> tuple[PreTrainedModel, TokenTask]:
    """``source`` as a token-classification model: with a fresh head for ``labels``, or, for
    ``None``, with the head and labels it was saved with (a checkpoint to start from or score)."""
    tokenizer = load_tokenizer(source)
    kwargs: dict[str, Any] = {}
    if labels is not None:
        kwargs = {"id2label": dict(enumerate(labels)), "label2id": {n: i for i, n in enumerate(labels)},
                  "ignore_mismatched_sizes": True}
    model = load_model(AutoModelForTokenClassification.from_pretrained, source, "a token-classification model",
                       **kwargs)
    id2label = model.config.id2label or {}
    names = [str(id2label.get(i, f"LABEL_{i}")) for i in range(int(model.config.num_labels))]
    if labels is None and (not names or names[0] != OUTSIDE_LABEL):
        raise TrainingError(f"{source} is not an NER checkpoint of this trainer: its first label is not "
                            f"{OUTSIDE_LABEL!r} (labels {', '.join(names)})")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return model, TokenTask(tokenizer, names, length_limit(parameters, model, tokenizer), int(pad_id))


def with_lora(model: PreTrainedModel, parameters: TrainingParameters) -> PeftModel:
    """``model`` with LoRA on its backbone and its head trained in full."""
    return attach_lora(model, parameters, peft_task="TOKEN_CLS", head_modules=head_modules(model))
