"""The runners of the image task types: a ``SingleModelRunner`` each, with an image thread
(``ImageExecutor``) beside the batch worker that text requests use."""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi import APIRouter

from enginehouse.runtime.metrics import ReplicaLoad
from enginehouse.runtime.options import RuntimeOptions
from enginehouse.runtime.single.runner import SingleModelRunner
from enginehouse.runtime.single.slot import ModelSlot
from enginehouse.runtime.vision import clip, detection
from enginehouse.runtime.vision.clip import ClipModel, open_clip_model
from enginehouse.runtime.vision.clip_serving import ClipClassificationServing, ClipEmbeddingServing
from enginehouse.runtime.vision.detection import DetectionModel, DetectionServing, open_detection_model
from enginehouse.runtime.vision.executor import ImageExecutor
from enginehouse.settings import Settings


M = TypeVar("M", ClipModel, DetectionModel)


class ImageRunner(SingleModelRunner[M]):
    """A single-model runner with an image thread beside its batch worker, and the local-files
    setting its requests are checked against. Subclasses open their models and give the routes."""

    def __init__(self, *, base_model: str, served_name: str, options: RuntimeOptions) -> None:
        super().__init__(base_model=base_model, served_name=served_name, options=options)
        self.images = ImageExecutor()
        # Replicas inherit the server's environment, so the server's setting applies here.
        self.allow_local_files = Settings().allow_local_files

    def start(self) -> None:
        super().start()
        self.images.start()

    def stop(self) -> None:
        self.images.stop()
        super().stop()

    def describe(self, model: M) -> dict[str, Any]:
        running, waiting = self.images.counts()
        return {**model.describe(), "image_running": running, "image_waiting": waiting}

    def load_report(self) -> ReplicaLoad:
        """The batch worker's load plus the image thread's, so the autoscaler sees image traffic."""
        load = super().load_report()
        running, waiting = self.images.counts()
        return ReplicaLoad(running=load.running + running, waiting=load.waiting + waiting)


class ClipEmbeddingRunner(ImageRunner[ClipModel]):
    task_type = "clip-embedding"
    _base: clip.BaseTraits | None = None

    def open_base(self) -> ClipModel:
        model = open_clip_model(self.base_model, self.options, task=self.task_type)
        self._base = model.traits()
        return model

    def open_fine_tune(self, path: str) -> ClipModel:
        assert self._base is not None, "the base model loads first"
        return open_clip_model(path, self.options, task=self.task_type, base=self._base)

    def routes(self, slot: ModelSlot[ClipModel]) -> APIRouter:
        return ClipEmbeddingServing(slot, self.worker, self.images, allow_local_files=self.allow_local_files).router()


class ClipClassificationRunner(ClipEmbeddingRunner):
    task_type = "clip-classification"

    def routes(self, slot: ModelSlot[ClipModel]) -> APIRouter:
        return ClipClassificationServing(slot, self.worker, self.images,
                                         allow_local_files=self.allow_local_files).router()


class DetectionRunner(ImageRunner[DetectionModel]):
    task_type = "image-detection"
    _base: detection.BaseTraits | None = None

    def open_base(self) -> DetectionModel:
        model = open_detection_model(self.base_model, self.options)
        self._base = model.traits()
        return model

    def open_fine_tune(self, path: str) -> DetectionModel:
        assert self._base is not None, "the base model loads first"
        return open_detection_model(path, self.options, base=self._base)

    def routes(self, slot: ModelSlot[DetectionModel]) -> APIRouter:
        return DetectionServing(slot, self.worker, self.images, allow_local_files=self.allow_local_files).router()
