"""Request and response models of the image endpoints (SPEC §6): ``POST /v1/image-embeddings``
(clip-embedding), ``POST /v1/image-classification`` (clip-classification) and
``POST /v1/detections`` (image-detection).

The gateway validates client bodies with these requests and the replica validates again, so both
agree on what is a bad request. Unknown fields are refused (400). ``image`` is a ``data:`` URI, bare
base64 image bytes, or a ``file://`` path on the server's machine (only when the server allows
local files); see ``enginehouse.runtime.images``. One image per request.

Answers are OpenAI-style envelopes ``{"object": "list", "model", "data": [...], "usage"}``:

* image-embeddings: ``data: [{"object": "embedding", "index": 0, "embedding": [...]}]``; with
  ``type: "pooled"`` one vector (the model's projected image embedding, the one text embeddings
  from ``/v1/embeddings`` are compared with); with ``type: "patch-wise"`` one vector per image
  patch (the vision encoder's last hidden states, class token excluded, in row-major patch order).
* image-classification: ``data: [{"object": "classification", "index", "label", "score"}]``, one
  per label in the order given, ``score`` the softmax over the labels of the image-text
  similarities (CLIP zero-shot); ``label`` names the best one at the top level too.
* detections: ``data: [{"object": "detection", "label", "score", "box": [x0, y0, x1, y1]}]``, the
  boxes in the input image's pixels, highest score first, those below ``threshold`` left out.

``usage`` counts ``images`` (and ``prompt_tokens`` / ``total_tokens`` of label texts).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

# Zero-shot labels in one request: each is one text through the text encoder.
MAX_LABELS = 256
# Characters per label: a label is a short phrase; CLIP reads 77 tokens of it at most.
MAX_LABEL_CHARS = 1000


class ImageRequest(BaseModel):
    # strict: "false" is not a boolean nor "5" a number, as in OpenAI's API.
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    model: str = Field(min_length=1)
    image: str = Field(min_length=1)
    user: str | None = None


class ImageEmbeddingRequest(ImageRequest):
    type: Literal["pooled", "patch-wise"] = "pooled"


class ImageClassificationRequest(ImageRequest):
    # None: the labels the checkpoint carries (its config's id2label).
    labels: list[Annotated[str, Field(max_length=MAX_LABEL_CHARS)]] | None = Field(
        default=None, min_length=1, max_length=MAX_LABELS)


class DetectionRequest(ImageRequest):
    threshold: float = Field(default=0.5, ge=0.0, le=1.0)


class ImageUsage(BaseModel):
    images: int
    prompt_tokens: int = 0
    total_tokens: int = 0


class ImageEmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    # pooled: one vector; patch-wise: one vector per patch.
    embedding: list[float] | list[list[float]]


class ImageEmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    type: Literal["pooled", "patch-wise"]
    data: list[ImageEmbeddingData]
    model: str
    usage: ImageUsage


class LabelScore(BaseModel):
    object: Literal["classification"] = "classification"
    index: int
    label: str
    score: float


class ImageClassificationResponse(BaseModel):
    object: Literal["list"] = "list"
    label: str  # the best-scoring label
    data: list[LabelScore]
    model: str
    usage: ImageUsage


class Detection(BaseModel):
    object: Literal["detection"] = "detection"
    label: str
    score: float
    box: list[float]  # [x0, y0, x1, y1] in the input image's pixels


class DetectionResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Detection]
    model: str
    usage: ImageUsage
