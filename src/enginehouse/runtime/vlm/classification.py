"""``vlm-classification``: an image classification checkpoint (``AutoModelForImageClassification``)
answering ``POST /v1/classification`` with an ``image`` field, shaped as text classification.

transformers has no general image+text sequence-classification class (Gemma 3's is tied to one
family), so the served head is an image classifier; a request's ``input`` text is refused rather
than silently ignored.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch
from fastapi import APIRouter, Request
from fastapi.responses import Response
from torch import nn
from transformers import AutoImageProcessor, AutoModelForImageClassification

from enginehouse.errors import BadRequestError
from enginehouse.protocol.classification import (
    ClassificationData,
    ClassificationRequest,
    ClassificationResponse,
    ClassificationUsage,
    new_classification_id,
)
from enginehouse.runtime.http import parse_body
from enginehouse.runtime.options import RuntimeOptions
from enginehouse.runtime.single import loading
from enginehouse.runtime.single.loading import ModelLoadError
from enginehouse.runtime.single.serving import SingleModelServing
from enginehouse.runtime.single.slot import ModelSlot
from enginehouse.runtime.vlm.images import decode_rgb

log = logging.getLogger(__name__)


@dataclass
class ImageClassifier:
    model: nn.Module
    processor: Any
    device: torch.device
    labels: tuple[str, ...]
    multi_label: bool
    model_type: str

    @torch.inference_mode()
    def logits(self, pixel_values: torch.Tensor) -> list[float]:
        return self.model(pixel_values=pixel_values.to(self.device)).logits[0].float().cpu().tolist()

    def describe(self) -> dict[str, Any]:
        return {"labels": list(self.labels)}


def open_image_classifier(source: str, options: RuntimeOptions, *, base_model_type: str | None = None
                          ) -> ImageClassifier:
    loading.check_source(source, fine_tune=base_model_type is not None, task="vlm-classification")
    config = loading.load_config(source)
    names = loading.architectures(config)
    if names and not any(a.endswith("ForImageClassification") for a in names):
        raise ModelLoadError(f"{source} is a {names[0]} checkpoint, not an image classification model; a "
                             "vlm-classification engine needs one saved from AutoModelForImageClassification")
    loading.check_model_type(config, base_model_type, source)
    try:
        processor = AutoImageProcessor.from_pretrained(source)
    except Exception as exc:
        raise ModelLoadError(f"could not load the image processor of {source}: {loading.short(exc)}; save it "
                             "with the model") from None
    model, device = loading.load_weights(AutoModelForImageClassification, source, options.dtype,
                                         task="vlm-classification")
    id2label = getattr(model.config, "id2label", None) or {}
    labels = tuple(str(id2label.get(i, f"LABEL_{i}")) for i in range(int(model.config.num_labels)))
    multi = getattr(model.config, "problem_type", None) == "multi_label_classification"
    log.info("loaded vlm-classification model %s on %s (labels %s)", source, device, ", ".join(labels))
    return ImageClassifier(model, processor, device, labels, multi, str(config.model_type))


class VlmClassificationServing(SingleModelServing[ImageClassifier]):
    def __init__(self, slot: ModelSlot[ImageClassifier], executor: ThreadPoolExecutor) -> None:
        self.slot = slot
        self.executor = executor

    def router(self) -> APIRouter:
        router = super().router()
        router.add_api_route("/v1/classification", self.classify, methods=["POST"])
        return router

    async def classify(self, request: Request) -> Response:
        body = await parse_body(request, ClassificationRequest)
        served = self.resolve(body.model)
        model = served.model
        if not body.image:
            raise BadRequestError("image is required: this is a vlm-classification model", param="image")
        if body.input is not None:
            raise BadRequestError("this model classifies images only; leave out input", param="input")
        loop = asyncio.get_running_loop()

        def work() -> list[float]:
            image = decode_rgb(body.image or "", param="image")
            pixels = model.processor(images=[image], return_tensors="pt")["pixel_values"]
            return model.logits(pixels)

        values = await loop.run_in_executor(self.executor, work)
        data = ClassificationData(index=0)
        if body.data_format == "probs":
            tensor = torch.tensor(values)
            probs = tensor.sigmoid() if model.multi_label else tensor.softmax(-1)
            data.probs = dict(zip(model.labels, probs.tolist()))
        else:
            data.logits = dict(zip(model.labels, values))
        # No text tokens: usage counts none (an image has no token count in this model).
        answer = ClassificationResponse(id=new_classification_id(), model=body.model, data=[data],
                                        usage=ClassificationUsage(prompt_tokens=0, total_tokens=0))
        return Response(answer.model_dump_json(exclude_none=True), media_type="application/json")
