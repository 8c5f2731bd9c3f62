"""Request and response models of ``POST /v1/classification`` (SPEC §6) for text classification
and regression deployments.

As for the OpenAI endpoints, the gateway validates client bodies with ``ClassificationRequest``
before forwarding them and the replica validates again with the same model. Unknown fields
are refused (400). Beyond the SPEC's fields, ``truncate`` (also accepted as ``truncation``, the Hugging
Face spelling) lets inputs longer than the model takes be cut to fit instead of refused.
"""

from __future__ import annotations

import secrets
import time
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    ValidationInfo,
    field_validator,
)

# Inputs per call; as many as OpenAI's embeddings endpoint takes.
MAX_INPUTS = 2048

DataFormat = Literal["logits", "probs"]


class ClassificationRequest(BaseModel):
    # strict: "false" is not a boolean nor "5" a number, as in OpenAI's API.
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    model: str = Field(min_length=1)
    # vlm-classification: one image (data: URI, base64, or file:// where allowed); the replica
    # decodes it. Declared before ``input`` so that input's validator can see it.
    image: str | None = None
    # Required, except on calls that send an ``image`` (vlm-classification; text then optional).
    input: str | list[str] | None = Field(default=None, validate_default=True)
    # logits: the head's raw outputs; probs: softmax (single-label) or sigmoid (multi-label).
    data_format: DataFormat = "logits"
    # Cut inputs longer than the model's maximum input length instead of answering 400.
    truncate: bool = False
    truncation: bool = False
    user: str | None = None

    @field_validator("input", mode="wrap")
    @classmethod
    def _check_input(cls, value: object, handler: ValidatorFunctionWrapHandler, info: ValidationInfo) -> object:
        if value is None:
            if info.data.get("image"):
                return None
            raise ValueError("input is required (or, for vlm-classification, image)")
        try:
            checked = handler(value)
        except ValidationError:
            raise ValueError("input must be a string or a list of strings") from None
        texts = [checked] if isinstance(checked, str) else checked
        if not texts:
            raise ValueError("input must not be empty")
        if len(texts) > MAX_INPUTS:
            raise ValueError(f"input has {len(texts)} items; at most {MAX_INPUTS} are allowed per request")
        empty = next((i for i, text in enumerate(texts) if not text), None)
        if empty is not None:
            raise ValueError("input must not be empty" if isinstance(checked, str) else f"input[{empty}] is empty")
        return checked

    def inputs(self) -> list[str]:
        if self.input is None:
            return []
        return [self.input] if isinstance(self.input, str) else list(self.input)

    @property
    def wants_truncation(self) -> bool:
        return self.truncate or self.truncation


class ClassificationData(BaseModel):
    index: int
    # Exactly one of the two, as ``data_format`` asked; keys are the deployment's labels in order.
    logits: dict[str, float] | None = None
    probs: dict[str, float] | None = None


class ClassificationUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class ClassificationResponse(BaseModel):
    id: str
    object: Literal["classification"] = "classification"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    data: list[ClassificationData]
    usage: ClassificationUsage

    def to_body(self) -> dict[str, object]:
        # The unused one of logits/probs is left out, not sent as null.
        return self.model_dump(exclude_none=True)


def new_classification_id() -> str:
    return f"classify-{secrets.token_hex(12)}"
