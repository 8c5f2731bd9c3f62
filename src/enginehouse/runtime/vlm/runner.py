"""The vlm-generation and vlm-classification runners: single-model engines (SPEC §4.3) whose
requests run one at a time on a worker thread of their own."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi import APIRouter

from enginehouse.runtime.single.runner import SingleModelRunner
from enginehouse.runtime.single.slot import ModelSlot
from enginehouse.runtime.vlm.chat import VlmChatServing
from enginehouse.runtime.vlm.classification import ImageClassifier, VlmClassificationServing, open_image_classifier
from enginehouse.runtime.vlm.generation import VlmGenerator, open_vlm_generator


def _executor() -> ThreadPoolExecutor:
    # One thread: a model's forwards run one request at a time (see generation.py).
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="enginehouse-vlm")


class VlmGenerationRunner(SingleModelRunner[VlmGenerator]):
    task_type = "vlm-generation"
    _base_type: str | None = None
    _executor: ThreadPoolExecutor | None = None

    def open_base(self) -> VlmGenerator:
        model = open_vlm_generator(self.base_model, self.options)
        self._base_type = model.model_type
        return model

    def open_fine_tune(self, path: str) -> VlmGenerator:
        assert self._base_type is not None, "the base model loads first"
        return open_vlm_generator(path, self.options, base_model_type=self._base_type)

    def routes(self, slot: ModelSlot[VlmGenerator]) -> APIRouter:
        self._executor = self._executor or _executor()
        return VlmChatServing(slot, self._executor, self.metrics).router()

    def describe(self, model: VlmGenerator) -> dict[str, Any]:
        return model.describe()

    def stop(self) -> None:
        super().stop()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)


class VlmClassificationRunner(SingleModelRunner[ImageClassifier]):
    task_type = "vlm-classification"
    _base_type: str | None = None
    _executor: ThreadPoolExecutor | None = None

    def open_base(self) -> ImageClassifier:
        model = open_image_classifier(self.base_model, self.options)
        self._base_type = model.model_type
        return model

    def open_fine_tune(self, path: str) -> ImageClassifier:
        assert self._base_type is not None, "the base model loads first"
        return open_image_classifier(path, self.options, base_model_type=self._base_type)

    def routes(self, slot: ModelSlot[ImageClassifier]) -> APIRouter:
        self._executor = self._executor or _executor()
        return VlmClassificationServing(slot, self._executor).router()

    def describe(self, model: ImageClassifier) -> dict[str, Any]:
        return model.describe()

    def stop(self) -> None:
        super().stop()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
