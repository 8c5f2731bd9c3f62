"""Classification and regression: LoRA on the backbone of a sequence-classification model, with
its head trained in full and saved beside the adapter, as a replica serves it.

The checkpoint is the adapter (LoRA weights plus the head, through ``modules_to_save``) and the
model's ``config.json`` (``id2label``, ``problem_type``, and the ``sentence_pooling`` markers when
the head reads the mean-pooled sentence embedding), which is where a replica reads the labels and
the pooling from (``runtime.classify.adapters``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from peft import PeftModel
from torch import nn
from transformers import AutoModelForSequenceClassification, PreTrainedModel, PreTrainedTokenizerBase

from enginehouse.runtime.classify.pooling import MeanPooling, SentencePooling, pooler_problem
from enginehouse.training.batching import Encoded, attention_mask, evaluation_batches, pad
from enginehouse.training.cancel import Cancellation
from enginehouse.training.config import REGRESSION_LABEL
from enginehouse.training.data import ClassificationExample, Example, RegressionExample
from enginehouse.training.errors import TrainingError
from enginehouse.training.evaluation import classification_scores, mean_absolute_error
from enginehouse.training.lora import attach_lora
from enginehouse.training.models import LengthLimit, length_limit, load_model, load_tokenizer
from enginehouse.training.parameters import TrainingParameters

log = logging.getLogger(__name__)
Batch = dict[str, torch.Tensor]


class SequenceTask:
    def __init__(self, task_type: str, tokenizer: PreTrainedTokenizerBase, labels: Sequence[str],
                 limit: LengthLimit, pad_id: int) -> None:
        self.regression = task_type == "regression"
        self.tokenizer = tokenizer
        self.label_ids = {label: i for i, label in enumerate(labels)}
        self.limit = limit
        self.pad_id = pad_id

    def encode(self, examples: Sequence[Example], split_name: str) -> list[Encoded]:
        texts = [e.text for e in examples]  # type: ignore[union-attr]
        ids = self.tokenizer(texts, add_special_tokens=True)["input_ids"]
        over = self.limit.check(split_name, [(e.line, len(row)) for e, row in zip(examples, ids, strict=True)])
        if over:
            # Through the tokenizer again, so the cut keeps the special tokens (BERT's [SEP]).
            cut = self.tokenizer([texts[i] for i in over], add_special_tokens=True, truncation=True,
                                 max_length=self.limit.tokens)["input_ids"]
            for i, row in zip(over, cut, strict=True):
                ids[i] = row
            log.info("%s: cut %d row(s) to %d tokens", split_name, len(over), self.limit.tokens)
        return [Encoded(e.line, list(row), self._target(e)) for e, row in zip(examples, ids, strict=True)]

    def batch(self, rows: Sequence[Encoded], device: torch.device) -> Batch:
        ids = [row.input_ids for row in rows]
        kind = torch.float32 if self.regression else torch.long
        return {
            "input_ids": pad(ids, self.pad_id).to(device),
            "attention_mask": attention_mask(ids).to(device),
            "targets": torch.tensor([row.target for row in rows], dtype=kind, device=device),
        }

    def loss(self, model: PeftModel, batch: Batch) -> torch.Tensor:
        return self._losses(self._logits(model, batch), batch["targets"]).mean()

    def evaluate(self, model: PeftModel, rows: Sequence[Encoded], batch_size: int, device: torch.device,
                 cancel: Cancellation) -> dict[str, float]:
        losses, outputs, gold = [], [], []
        for indices in evaluation_batches([len(r.input_ids) for r in rows], batch_size):
            cancel.check()
            batch = self.batch([rows[i] for i in indices], device)
            logits = self._logits(model, batch)
            losses.append(self._losses(logits, batch["targets"]))
            outputs.append(logits.squeeze(-1) if self.regression else logits.argmax(dim=-1))
            gold.append(batch["targets"])
        results = {"eval_loss": float(torch.cat(losses).mean())}
        predicted, expected = torch.cat(outputs).tolist(), torch.cat(gold).tolist()
        if self.regression:
            return {**results, "mae": mean_absolute_error(expected, predicted)}
        return {**results, **classification_scores(expected, predicted)}

    def save(self, model: PeftModel, directory: Path) -> None:
        model.save_pretrained(str(directory))
        base: Any = model.get_base_model()  # a transformers model: its config holds the labels
        base.config.save_pretrained(str(directory))

    def _target(self, example: Example) -> int | float:
        if isinstance(example, RegressionExample):
            return example.value
        assert isinstance(example, ClassificationExample)
        return self.label_ids[example.label]

    def _logits(self, model: PeftModel, batch: Batch) -> torch.Tensor:
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()

    def _losses(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.regression:
            return F.mse_loss(logits.squeeze(-1), targets, reduction="none")
        return F.cross_entropy(logits, targets, reduction="none")


# Sets a freshly loaded model's head before LoRA goes on (and PEFT copies the head to train it).
HeadInit = Callable[[PreTrainedModel, SequenceTask], None]


def load_sequence_task(task_type: str, base_model: str, parameters: TrainingParameters, labels: Sequence[str],
                       *, init_head: HeadInit | None = None) -> tuple[PeftModel, SequenceTask]:
    """The base model with a head for ``labels`` (or one regression output), fresh unless
    ``init_head`` sets it, with LoRA on, reading what ``parameters.pooling`` says."""
    model, task, heads = load_sequence_model(task_type, base_model, parameters, labels)
    if init_head is not None:
        with torch.no_grad():
            init_head(model, task)
    peft_model = attach_lora(model, parameters, peft_task="SEQ_CLS", head_modules=heads)
    if parameters.pooling == "mean":
        use_mean_pooling(peft_model, task, SentencePooling(normalize=True), base_model)
    return peft_model, task


def load_sequence_model(task_type: str, base_model: str, parameters: TrainingParameters, labels: Sequence[str]
                        ) -> tuple[PreTrainedModel, SequenceTask, list[str]]:
    """The base model with a fresh head for ``labels``, its task, and the names of its head modules."""
    tokenizer = load_tokenizer(base_model)
    names = [REGRESSION_LABEL] if task_type == "regression" else list(labels)
    model, info = load_model(
        AutoModelForSequenceClassification.from_pretrained, base_model, "a sequence-classification model",
        id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)},
        problem_type="regression" if task_type == "regression" else "single_label_classification",
        # The base model's own head (if any) has other labels: a new one is made for ours.
        ignore_mismatched_sizes=True, output_loading_info=True,
    )
    heads = head_modules(model)
    _warn_untrained_backbone(info, heads)
    pad_id = _pad_token_id(model, tokenizer, base_model)
    return model, SequenceTask(task_type, tokenizer, names, length_limit(parameters, model, tokenizer), pad_id), heads


def use_mean_pooling(model: PeftModel, task: SequenceTask, pooling: SentencePooling, base_model: str) -> None:
    """Make the head read the masked mean of the last hidden state, in training, evaluation and
    (through the markers saved in config.json) on a replica."""
    base: Any = model.get_base_model()
    probe = torch.tensor([task.tokenizer("hello")["input_ids"] or [task.pad_id]], device=base.device)
    problem = pooler_problem(base, probe)
    if problem is not None:
        raise TrainingError(f"pooling 'mean' cannot be used with base model {base_model!r}: {problem}")
    MeanPooling(base, pooling)
    pooling.mark(base.config)


def head_modules(model: nn.Module) -> list[str]:
    """The modules around the backbone that hold weights (BERT's ``classifier``, Llama's
    ``score``, DistilBERT's ``pre_classifier`` and ``classifier``): all are trained and saved, as
    a replica takes every one of them from the adapter."""
    backbone = getattr(model, "base_model", None)
    heads = [name for name, child in model.named_children()
             if child is not backbone and any(True for _ in child.parameters())]
    if not heads:
        raise TrainingError(f"{type(model).__name__} has no classification head module to train")
    return heads


def _warn_untrained_backbone(info: dict[str, list[str]], heads: Sequence[str]) -> None:
    missing = [key for key in info.get("missing_keys") or []
               if not any(key == h or key.startswith(h + ".") for h in heads)]
    if missing:
        log.warning("the base model's checkpoint lacks %s; those weights start at random here and will "
                    "differ wherever the base model is loaded again", ", ".join(sorted(missing)[:10]))


def _pad_token_id(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, base_model: str) -> int:
    """The id batches are padded with. A decoder's head reads each row's last token that is not
    the config's pad id, so padding must use exactly that id; a model without one gets the
    tokenizer's pad (or end-of-sequence) token, as a replica does."""
    config = model.config
    if config.pad_token_id is not None:
        return int(config.pad_token_id)
    candidate = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if candidate is None:
        raise TrainingError(f"base model {base_model!r} defines no padding token (neither pad_token_id in its "
                            "config nor a pad or eos token in its tokenizer), so rows cannot be batched")
    config.pad_token_id = int(candidate)
    return int(candidate)
