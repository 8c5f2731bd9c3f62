"""Classification and regression checkpoints read back by the worker: the head a training starts
from (``init_checkpoint``) and the model a baseline is scored with (``baseline_checkpoint``).

Either is a checkpoint as this worker, or a zero-shot build, writes it: a PEFT adapter whose saved
modules hold the head, and a ``config.json`` with the labels and the pooling markers, read the way
a replica reads them (``runtime.classify``), so that what starts or scores a training is what a
replica would serve.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from safetensors import SafetensorError
from safetensors.torch import load_file
from transformers import PreTrainedModel

from enginehouse.core.json_files import JsonFileError, read_json_object
from enginehouse.runtime.classify.labels import HeadMismatch, head_spec
from enginehouse.runtime.classify.pooling import PoolingError, SentencePooling, read_sentence_pooling
from enginehouse.training.batching import Encoded
from enginehouse.training.cancel import Cancellation
from enginehouse.training.data import ClassificationExample, Example
from enginehouse.training.errors import TrainingError
from enginehouse.training.loop import score
from enginehouse.training.models import pick_device
from enginehouse.training.parameters import TrainingParameters
from enginehouse.training.sequence_classification import (
    SequenceTask,
    head_modules,
    load_sequence_model,
    use_mean_pooling,
)

log = logging.getLogger(__name__)

_ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "config.json")
# Where PEFT saves a model's own modules (the head) inside the adapter's weights.
_SAVED_PREFIX = "base_model.model."


@dataclass(frozen=True)
class CheckpointHead:
    path: Path
    what: str  # the config key that named it, for messages
    labels: tuple[str, ...]
    pooling: SentencePooling | None
    # The head's weights, keyed as in the transformers model (``classifier.weight``).
    tensors: dict[str, torch.Tensor]

    def check_labels(self, labels: Sequence[str], where: str) -> None:
        """Every label of ``labels`` (those of the rows of ``where``) must be one of the head's."""
        unknown = sorted(set(labels) - set(self.labels))
        if unknown:
            raise TrainingError(
                f"{self.what} {self.path} answers {', '.join(self.labels)}, but the {where} has the label(s) "
                f"{', '.join(unknown)}; use a checkpoint with those labels, or leave {self.what} out"
            )

    def check_pooling(self, parameters: TrainingParameters) -> None:
        """The trained head must read what this head was made for: a head built on normalised
        sentence embeddings means nothing over the pooled first token, and the other way round."""
        wanted = SentencePooling(normalize=True) if parameters.pooling == "mean" else None
        if self.pooling == wanted:
            return
        if self.pooling is None:
            fix = "set parameters.pooling to 'model'"
        elif self.pooling.normalize:
            fix = "set parameters.pooling to 'mean'"
        else:
            fix = "training reads the normalised mean only; start from another checkpoint"
        raise TrainingError(f"{self.what} {self.path} reads {_reads(self.pooling)}, but this job's head reads "
                            f"{_reads(wanted)} (parameters.pooling {parameters.pooling!r}); {fix}")

    def initialize(self, model: PreTrainedModel, task: SequenceTask) -> None:
        """Copy the head into ``model`` (built for the same labels), before LoRA goes on."""
        grouped: dict[str, dict[str, torch.Tensor]] = {name: {} for name in head_modules(model)}
        for key, tensor in self.tensors.items():
            owner = next((name for name in grouped if key.startswith(name + ".")), None)
            if owner is None:
                raise TrainingError(f"{self.what} {self.path} saves {key}, which is not part of this base model's "
                                    f"head ({', '.join(grouped)}): it was trained on another architecture")
            grouped[owner][key.removeprefix(owner + ".")] = tensor
        for name, tensors in grouped.items():
            try:
                model.get_submodule(name).load_state_dict(tensors, strict=True)
            except RuntimeError as exc:
                detail = str(exc).strip().splitlines()
                raise TrainingError(f"the head of {self.what} {self.path} does not fit this base model's {name}: "
                                    f"{detail[-1].strip() if detail else exc}") from None
        log.info("the head starts from %s (%s)", self.path, ", ".join(self.labels))


def read_checkpoint_head(path: str, task_type: str, what: str) -> CheckpointHead:
    """The head, labels and pooling of the checkpoint ``path`` (named by the config key ``what``),
    refused in words when it is not a ``task_type`` checkpoint."""
    directory = Path(path)
    missing = [name for name in _ADAPTER_FILES if not (directory / name).is_file()]
    if missing:
        raise TrainingError(f"{what} {path} is not a {task_type} checkpoint: it has no {', '.join(missing)}")
    config = _config(directory / "config.json", what)
    id2label = config.get("id2label") or {}
    try:
        if not isinstance(id2label, dict) or not id2label:
            raise HeadMismatch("its config.json names no labels (id2label)")
        labels = head_spec(config, len(id2label), task_type).labels
        pooling = read_sentence_pooling(config)
    except (HeadMismatch, PoolingError) as exc:
        # Only what is wrong: the runtime's advice after it is about deploying, not training.
        raise TrainingError(f"{what} {path} does not fit a {task_type} job: {str(exc).split('; ')[0]}") from None
    try:
        saved = load_file(str(directory / "adapter_model.safetensors"))
    except (OSError, SafetensorError) as exc:
        raise TrainingError(f"{what} {path}: its adapter_model.safetensors cannot be read: {exc}") from None
    tensors = {key.removeprefix(_SAVED_PREFIX): tensor for key, tensor in saved.items() if "lora_" not in key}
    if not tensors:
        raise TrainingError(f"{what} {path} saves no classification head (no modules_to_save in its adapter)")
    return CheckpointHead(directory, what, labels, pooling, tensors)


def score_baseline(head: CheckpointHead, task_type: str, base_model: str, parameters: TrainingParameters,
                   examples: Sequence[Example], split_name: str, cancel: Cancellation) -> dict[str, float]:
    """The test results of the checkpoint ``head`` was read from on ``examples``, the same
    metrics as each trained checkpoint's."""
    head.check_labels([e.label for e in examples if isinstance(e, ClassificationExample)], f"{split_name} data")
    if not examples:
        return {}
    model, task = _load_checkpoint(head, task_type, base_model, parameters)
    rows: list[Encoded] = task.encode(examples, split_name)
    device = pick_device()
    model.to(device)
    results = score(model, task, rows, parameters.per_device_eval_batch_size, device, cancel)
    log.info("baseline %s test results: %s", head.path, ", ".join(f"{k} {v:.4f}" for k, v in results.items()))
    return results


def _load_checkpoint(head: CheckpointHead, task_type: str, base_model: str, parameters: TrainingParameters
                     ) -> tuple[PeftModel, SequenceTask]:
    """The base model with the checkpoint applied as PEFT applies it, LoRA weights included."""
    model, task, _ = load_sequence_model(task_type, base_model, parameters, head.labels)
    try:
        peft_model = PeftModel.from_pretrained(model, str(head.path))
    except Exception as exc:  # PEFT raises many types for an adapter that does not fit
        lines = str(exc).strip().splitlines()
        raise TrainingError(f"{head.what} {head.path} does not load onto base model {base_model!r}: "
                            f"{lines[0] if lines else type(exc).__name__}") from None
    if head.pooling is not None:
        use_mean_pooling(peft_model, task, head.pooling, base_model)
    return peft_model, task


def _reads(pooling: SentencePooling | None) -> str:
    if pooling is None:
        return "the model's pooled output"
    return f"the {'normalised ' if pooling.normalize else 'unnormalised '}mean of the last hidden state"


def _config(path: Path, what: str) -> dict[str, Any]:
    try:
        return read_json_object(path)
    except JsonFileError as exc:
        raise TrainingError(f"{what}: {exc}") from None
