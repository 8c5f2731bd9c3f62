"""What a classification head's outputs mean: its labels, and how its scores are presented.

The meaning comes from a Hugging Face ``config.json`` (the base model's, or the one saved beside
an adapter): ``id2label`` names the outputs in order and ``problem_type`` says how they are read.
Without ``problem_type`` transformers reads one output as regression and several as single-label
classification; we follow the same convention so a checkpoint means here what it meant in training.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch

ProblemKind = Literal["single_label", "multi_label", "regression"]
DataFormat = Literal["logits", "probs"]

# The one label a regression answer carries (SPEC §3).
REGRESSION_LABEL = "score"

_PROBLEM_TYPES: dict[str, ProblemKind] = {
    "single_label_classification": "single_label",
    "multi_label_classification": "multi_label",
    "regression": "regression",
}


class HeadMismatch(ValueError):
    """A head whose outputs cannot serve this engine's task type; the message says why."""


@dataclass(frozen=True)
class HeadSpec:
    labels: tuple[str, ...]
    kind: ProblemKind

    @property
    def size(self) -> int:
        return len(self.labels)

    def present(self, logits: torch.Tensor, data_format: DataFormat) -> list[dict[str, float]]:
        """One ``{label: value}`` per row of ``logits`` (``[rows, size]``, float32)."""
        values = logits
        if data_format == "probs" and self.kind == "multi_label":
            values = logits.sigmoid()  # each label is its own yes/no question
        elif data_format == "probs" and self.kind == "single_label":
            values = logits.softmax(dim=-1)
        return [dict(zip(self.labels, row)) for row in values.tolist()]


def head_spec(config: Mapping[str, Any], outputs: int, task_type: str) -> HeadSpec:
    """The meaning of a head with ``outputs`` outputs, described by ``config`` (a config.json's
    content, possibly empty), on an engine of ``task_type``. Raises ``HeadMismatch``."""
    problem = config.get("problem_type")
    if problem is not None and problem not in _PROBLEM_TYPES:
        known = ", ".join(_PROBLEM_TYPES)
        raise HeadMismatch(f"problem_type {problem!r} is not one of {known}")
    kind = _PROBLEM_TYPES[problem] if problem else ("regression" if outputs == 1 else "single_label")
    if task_type == "regression":
        if kind != "regression":
            raise HeadMismatch(
                f"it is a {outputs}-label classifier (problem_type {problem or 'unset'}), not a "
                "regression model; deploy it on a classification engine"
            )
        if outputs != 1:
            raise HeadMismatch(f"a regression head has one output, but this one has {outputs}")
        return HeadSpec((REGRESSION_LABEL,), "regression")
    if kind == "regression":
        if problem:
            raise HeadMismatch("it is a regression model (problem_type regression); deploy it on a regression engine")
        raise HeadMismatch(
            "its head has one output and config.json sets no problem_type, which transformers reads "
            "as regression; deploy it on a regression engine, or set problem_type to "
            "'multi_label_classification' for a one-label classifier"
        )
    return HeadSpec(_labels(config.get("id2label"), outputs), kind)


def _labels(id2label: object, outputs: int) -> tuple[str, ...]:
    if not id2label:
        # transformers' own names for unnamed outputs.
        return tuple(f"LABEL_{i}" for i in range(outputs))
    if not isinstance(id2label, Mapping):
        raise HeadMismatch("id2label in config.json must be an object mapping label ids to names")
    try:
        by_id = {int(key): str(name) for key, name in id2label.items()}
    except (TypeError, ValueError):
        raise HeadMismatch("id2label keys in config.json must be label ids (0, 1, …)") from None
    if sorted(by_id) != list(range(outputs)):
        raise HeadMismatch(
            f"config.json's id2label names {len(by_id)} label(s) but the head has {outputs} "
            f"output(s); save the config of the model the head was trained with "
            "(model.config.save_pretrained) beside the adapter"
        )
    labels = tuple(by_id[i] for i in range(outputs))
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise HeadMismatch(f"id2label repeats the label(s) {', '.join(repeated)}; label names must be unique")
    return labels
