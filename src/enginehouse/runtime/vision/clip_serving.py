"""The CLIP endpoints: ``/v1/embeddings`` (text, as an embedding engine answers it),
``/v1/image-embeddings`` (clip-embedding) and ``/v1/image-classification`` (clip-classification).
Answer shapes are documented in ``enginehouse.protocol.images``."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from enginehouse.errors import BadRequestError
from enginehouse.protocol.images import (
    ImageClassificationRequest,
    ImageClassificationResponse,
    ImageEmbeddingData,
    ImageEmbeddingRequest,
    ImageEmbeddingResponse,
    ImageUsage,
    LabelScore,
)
from enginehouse.runtime.embedding.serving import EmbeddingServing
from enginehouse.runtime.http import parse_body
from enginehouse.runtime.images import decode_image
from enginehouse.runtime.single.batching import BatchWorker
from enginehouse.runtime.single.serving import SingleModelServing
from enginehouse.runtime.single.slot import ModelSlot
from enginehouse.runtime.vision.clip import ClipModel
from enginehouse.runtime.vision.executor import ImageExecutor


class ClipEmbeddingServing(EmbeddingServing):
    """Text through the inherited ``/v1/embeddings``; images through ``/v1/image-embeddings``."""

    def __init__(self, slot: ModelSlot[ClipModel], worker: BatchWorker, images: ImageExecutor,
                 *, allow_local_files: bool) -> None:
        super().__init__(slot, worker)  # type: ignore[arg-type]  # ClipModel has EmbeddingModel's serving fields
        self.images = images
        self.allow_local_files = allow_local_files

    def router(self) -> APIRouter:
        router = super().router()
        router.add_api_route("/v1/image-embeddings", self.image_embeddings, methods=["POST"])
        return router

    async def image_embeddings(self, request: Request) -> Response:
        body = await parse_body(request, ImageEmbeddingRequest)
        model: ClipModel = self.resolve(body.model).model  # type: ignore[assignment]
        patch_wise = body.type == "patch-wise"

        def work() -> list[float] | list[list[float]]:
            image = decode_image(body.image, self.allow_local_files)
            return model.image_embedding(image, patch_wise=patch_wise).tolist()  # type: ignore[no-any-return]

        vector = await self.images.run(work)
        answer = ImageEmbeddingResponse(
            type=body.type, model=body.model, usage=ImageUsage(images=1),
            data=[ImageEmbeddingData(index=0, embedding=vector)],
        )
        return Response(answer.model_dump_json(), media_type="application/json")


class ClipClassificationServing(SingleModelServing[ClipModel]):
    def __init__(self, slot: ModelSlot[ClipModel], worker: BatchWorker, images: ImageExecutor,
                 *, allow_local_files: bool) -> None:
        super().__init__(slot, worker)
        self.images = images
        self.allow_local_files = allow_local_files

    def router(self) -> APIRouter:
        router = super().router()
        router.add_api_route("/v1/image-classification", self.classify, methods=["POST"])
        return router

    async def classify(self, request: Request) -> Response:
        body = await parse_body(request, ImageClassificationRequest)
        model = self.resolve(body.model).model
        labels = body.labels or model.labels
        if not labels:
            raise BadRequestError(
                f"'{body.model}' carries no labels of its own (its config has no id2label); give the "
                "candidate labels in the request's labels", param="labels")
        if any(not label.strip() for label in labels):
            raise BadRequestError("labels must not contain empty strings", param="labels")

        def work() -> tuple[list[float], int]:
            image = decode_image(body.image, self.allow_local_files)
            return model.zero_shot(image, labels)

        scores, tokens = await self.images.run(work)
        best = max(range(len(labels)), key=lambda i: scores[i])
        answer = ImageClassificationResponse(
            label=labels[best], model=body.model,
            data=[LabelScore(index=i, label=label, score=score)
                  for i, (label, score) in enumerate(zip(labels, scores))],
            usage=ImageUsage(images=1, prompt_tokens=tokens, total_tokens=tokens),
        )
        return Response(answer.model_dump_json(), media_type="application/json")
