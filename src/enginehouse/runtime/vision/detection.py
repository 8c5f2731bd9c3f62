"""The ``image-detection`` task type: an ``AutoModelForObjectDetection`` checkpoint (DETR and
relatives) with its image processor, serving ``POST /v1/detections``.

Boxes are what the image processor's ``post_process_object_detection`` gives for the input
image's own size, so they are in the input image's pixels whatever the model resized it to.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from fastapi import APIRouter, Request
from fastapi.responses import Response
from PIL import Image
from torch import nn
from transformers import AutoModelForObjectDetection

from enginehouse.protocol.images import Detection, DetectionRequest, DetectionResponse, ImageUsage
from enginehouse.runtime.http import parse_body
from enginehouse.runtime.images import decode_image
from enginehouse.runtime.options import RuntimeOptions
from enginehouse.runtime.single import loading
from enginehouse.runtime.single.batching import BatchWorker
from enginehouse.runtime.single.loading import ModelLoadError
from enginehouse.runtime.single.serving import SingleModelServing
from enginehouse.runtime.single.slot import ModelSlot
from enginehouse.runtime.vision.executor import ImageExecutor
from enginehouse.runtime.vision.processors import checkpoint_labels, load_image_processor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BaseTraits:
    model_type: str
    image_processor: Any


@dataclass
class DetectionModel:
    model: nn.Module
    image_processor: Any
    device: torch.device
    labels: list[str]
    model_type: str

    def detect(self, image: Image.Image, threshold: float) -> list[Detection]:
        inputs = self.image_processor(images=image, return_tensors="pt")
        inputs = {k: v.to(self.device, dtype=self.model.dtype) if v.is_floating_point() else v.to(self.device)
                  for k, v in inputs.items()}
        outputs = self.model(**inputs)
        found = self.image_processor.post_process_object_detection(
            outputs, threshold=threshold, target_sizes=[(image.height, image.width)])[0]
        detections = [
            Detection(label=self.label(int(label)), score=float(score), box=[float(x) for x in box])
            for score, label, box in zip(found["scores"].tolist(), found["labels"].tolist(), found["boxes"].tolist())
        ]
        return sorted(detections, key=lambda d: d.score, reverse=True)

    def label(self, label_id: int) -> str:
        id2label = self.model.config.id2label
        return str(id2label.get(label_id, f"LABEL_{label_id}"))

    def describe(self) -> dict[str, Any]:
        return {"labels": self.labels}

    def traits(self) -> BaseTraits:
        return BaseTraits(self.model_type, self.image_processor)


def open_detection_model(source: str, options: RuntimeOptions, *, base: BaseTraits | None = None) -> DetectionModel:
    """Load ``source`` as an object-detection model. Raises ``ModelLoadError``."""
    loading.check_source(source, fine_tune=base is not None, task="image-detection")
    config = loading.load_config(source)
    loading.check_model_type(config, base.model_type if base is not None else None, source)
    if type(config) not in AutoModelForObjectDetection._model_mapping:
        raise ModelLoadError(
            f"{source} is a {config.model_type} model, which has no object-detection head in "
            "transformers; image-detection engines serve AutoModelForObjectDetection checkpoints (e.g. DETR)")
    image_processor = load_image_processor(source, fallback=base.image_processor if base is not None else None)
    if not hasattr(image_processor, "post_process_object_detection"):
        raise ModelLoadError(f"the image processor of {source} ({type(image_processor).__name__}) cannot "
                             "turn model outputs into boxes (no post_process_object_detection)")
    model, device = loading.load_weights(AutoModelForObjectDetection, source, options.dtype, task="image-detection")
    loaded = DetectionModel(model=model, image_processor=image_processor, device=device,
                            labels=checkpoint_labels(config), model_type=str(config.model_type))
    log.info("loaded detection model %s on %s (%d labels)", source, device, len(loaded.labels))
    return loaded


class DetectionServing(SingleModelServing[DetectionModel]):
    def __init__(self, slot: ModelSlot[DetectionModel], worker: BatchWorker, images: ImageExecutor,
                 *, allow_local_files: bool) -> None:
        super().__init__(slot, worker)
        self.images = images
        self.allow_local_files = allow_local_files

    def router(self) -> APIRouter:
        router = super().router()
        router.add_api_route("/v1/detections", self.detections, methods=["POST"])
        return router

    async def detections(self, request: Request) -> Response:
        body = await parse_body(request, DetectionRequest)
        model = self.resolve(body.model).model

        def work() -> list[Detection]:
            return model.detect(decode_image(body.image, self.allow_local_files), body.threshold)

        found = await self.images.run(work)
        answer = DetectionResponse(model=body.model, data=found, usage=ImageUsage(images=1))
        return Response(answer.model_dump_json(), media_type="application/json")
