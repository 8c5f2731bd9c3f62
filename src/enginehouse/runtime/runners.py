"""Which ``ModelRunner`` serves each task type. New task types add one line here."""

from __future__ import annotations

from enginehouse.runtime.base import ModelRunner
from enginehouse.runtime.classify.runner import ClassificationRunner, RegressionRunner
from enginehouse.runtime.embedding.runner import EmbeddingRunner
from enginehouse.runtime.ner.runner import NerRunner
from enginehouse.runtime.textgen.runner import TextGenerationRunner

RUNNERS: dict[str, type[ModelRunner]] = {
    TextGenerationRunner.task_type: TextGenerationRunner,
    ClassificationRunner.task_type: ClassificationRunner,
    RegressionRunner.task_type: RegressionRunner,
    EmbeddingRunner.task_type: EmbeddingRunner,
    NerRunner.task_type: NerRunner,
}
