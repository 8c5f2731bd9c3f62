"""Which ``ModelRunner`` serves each task type. New task types add one line here."""

from __future__ import annotations

from enginehouse.runtime.base import ModelRunner
from enginehouse.runtime.textgen.runner import TextGenerationRunner

RUNNERS: dict[str, type[ModelRunner]] = {
    TextGenerationRunner.task_type: TextGenerationRunner,
}
