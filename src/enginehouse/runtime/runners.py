"""Which ``ModelRunner`` serves each task type. New task types add one line here."""

from __future__ import annotations

from enginehouse.runtime.base import ModelRunner
from enginehouse.runtime.classify.runner import ClassificationRunner, RegressionRunner
from enginehouse.runtime.embedding.runner import EmbeddingRunner
from enginehouse.runtime.ner.runner import NerRunner
from enginehouse.runtime.textgen.runner import TextGenerationRunner
from enginehouse.runtime.vision.runner import ClipClassificationRunner, ClipEmbeddingRunner, DetectionRunner
from enginehouse.runtime.vlm.runner import VlmClassificationRunner, VlmGenerationRunner

RUNNERS: dict[str, type[ModelRunner]] = {
    TextGenerationRunner.task_type: TextGenerationRunner,
    ClassificationRunner.task_type: ClassificationRunner,
    RegressionRunner.task_type: RegressionRunner,
    EmbeddingRunner.task_type: EmbeddingRunner,
    NerRunner.task_type: NerRunner,
    ClipEmbeddingRunner.task_type: ClipEmbeddingRunner,
    ClipClassificationRunner.task_type: ClipClassificationRunner,
    DetectionRunner.task_type: DetectionRunner,
    VlmGenerationRunner.task_type: VlmGenerationRunner,
    VlmClassificationRunner.task_type: VlmClassificationRunner,
}
