"""The runners of the image task types: a ``SingleModelRunner`` each, with an image thread
(``ImageExecutor``) beside the batch worker that text requests use."""

from __future__ import annotations

from typing import Any

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


class _ImageRunner:
    """The image thread and the local-files setting, shared by the three runners."""

    images: ImageExecutor
    allow_local_files: bool

    def _init_images(self) -> None:
        self.images = ImageExecutor()
        # Replicas inherit the server's environment, so the server's setting applies here.
        self.allow_local_files = Settings().allow_local_files

    def _image_health(self) -> dict[str, Any]:
        running, waiting = self.images.counts()
        return {"image_running": running, "image_waiting": waiting}

    def _with_images(self, load: ReplicaLoad) -> ReplicaLoad:
        """The batch worker's load plus the image thread's, so the autoscaler sees image traffic."""
        running, waiting = self.images.counts()
        return ReplicaLoad(running=load.running + running, waiting=load.waiting + waiting)


class ClipEmbeddingRunner(SingleModelRunner[ClipModel], _ImageRunner):
    task_type = "clip-embedding"
    _base: clip.BaseTraits | None = None

    def __init__(self, *, base_model: str, served_name: str, options: RuntimeOptions) -> None:
        super().__init__(base_model=base_model, served_name=served_name, options=options)
        self._init_images()

    def open_base(self) -> ClipModel:
        model = open_clip_model(self.base_model, self.options, task=self.task_type)
        self._base = model.traits()
        return model

    def open_fine_tune(self, path: str) -> ClipModel:
        assert self._base is not None, "the base model loads first"
        return open_clip_model(path, self.options, task=self.task_type, base=self._base)

    def routes(self, slot: ModelSlot[ClipModel]) -> APIRouter:
        return ClipEmbeddingServing(slot, self.worker, self.images, allow_local_files=self.allow_local_files).router()

    def start(self) -> None:
        super().start()
        self.images.start()

    def stop(self) -> None:
        self.images.stop()
        super().stop()

    def describe(self, model: ClipModel) -> dict[str, Any]:
        return {**model.describe(), **self._image_health()}

    def load_report(self) -> ReplicaLoad:
        return self._with_images(super().load_report())


class ClipClassificationRunner(ClipEmbeddingRunner):
    task_type = "clip-classification"

    def routes(self, slot: ModelSlot[ClipModel]) -> APIRouter:
        return ClipClassificationServing(slot, self.worker, self.images,
                                         allow_local_files=self.allow_local_files).router()


class DetectionRunner(SingleModelRunner[DetectionModel], _ImageRunner):
    task_type = "image-detection"
    _base: detection.BaseTraits | None = None

    def __init__(self, *, base_model: str, served_name: str, options: RuntimeOptions) -> None:
        super().__init__(base_model=base_model, served_name=served_name, options=options)
        self._init_images()

    def open_base(self) -> DetectionModel:
        model = open_detection_model(self.base_model, self.options)
        self._base = model.traits()
        return model

    def open_fine_tune(self, path: str) -> DetectionModel:
        assert self._base is not None, "the base model loads first"
        return open_detection_model(path, self.options, base=self._base)

    def routes(self, slot: ModelSlot[DetectionModel]) -> APIRouter:
        return DetectionServing(slot, self.worker, self.images, allow_local_files=self.allow_local_files).router()

    def start(self) -> None:
        super().start()
        self.images.start()

    def stop(self) -> None:
        self.images.stop()
        super().stop()

    def describe(self, model: DetectionModel) -> dict[str, Any]:
        return {**model.describe(), **self._image_health()}

    def load_report(self) -> ReplicaLoad:
        return self._with_images(super().load_report())
