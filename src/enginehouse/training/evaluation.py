"""Test-split scores of a checkpoint, as plain functions of gold and predicted values."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence


def classification_scores(gold: Sequence[int], predicted: Sequence[int]) -> dict[str, float]:
    """Accuracy, and the F1 averaged with equal weight over the labels that occur in either list
    (scikit-learn's ``f1_score(average="macro")``): a rare label counts as much as a common one."""
    if not gold:
        return {"accuracy": 0.0, "macro_f1": 0.0}
    hits = Counter(g for g, p in zip(gold, predicted, strict=True) if g == p)
    actual, claimed = Counter(gold), Counter(predicted)
    labels = set(actual) | set(claimed)
    f1 = sum(2 * hits[label] / (actual[label] + claimed[label]) for label in labels) / len(labels)
    return {"accuracy": sum(hits.values()) / len(gold), "macro_f1": f1}


def mean_absolute_error(gold: Sequence[float], predicted: Sequence[float]) -> float:
    if not gold:
        return 0.0
    return sum(abs(g - p) for g, p in zip(gold, predicted, strict=True)) / len(gold)
