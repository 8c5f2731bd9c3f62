"""Request and response models of ``POST /v1/ner`` (named-entity recognition, SPEC §6).

``input`` is one text or a list of texts; each answer item lists the entities found in the text
of the same ``index``, with character offsets into that text (``text == input[start:end]``).
``truncate: true`` lets an input longer than the model's maximum length be cut to it (entities
are then found in the part that fits); without it such an input is a 400. Unknown fields are
refused (400).
"""

from __future__ import annotations

import secrets
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidatorFunctionWrapHandler, field_validator

from enginehouse.protocol.embeddings import MAX_INPUTS


class NerRequest(BaseModel):
    # strict: "false" is not a boolean nor "5" a number, as in OpenAI's API.
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    model: str = Field(min_length=1)
    input: str | list[str]
    truncate: bool = False
    user: str | None = None

    @field_validator("input", mode="wrap")
    @classmethod
    def _check_input(cls, value: object, handler: ValidatorFunctionWrapHandler) -> object:
        try:
            checked = handler(value)
        except ValidationError:
            raise ValueError("input must be a string or a list of strings") from None
        items = [checked] if isinstance(checked, str) else checked
        if not items or any(item == "" for item in items):
            raise ValueError("input must not be empty (nor contain an empty string)")
        if len(items) > MAX_INPUTS:
            raise ValueError(f"at most {MAX_INPUTS} inputs are allowed in one request")
        return checked

    def inputs(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


class NerEntity(BaseModel):
    text: str
    label: str  # the entity type, without its B-/I- prefix
    start: int  # character offsets into the input: text == input[start:end]
    end: int
    score: float  # mean of the entity's tokens' top probabilities


class NerResult(BaseModel):
    index: int
    entities: list[NerEntity]


class NerUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class NerResponse(BaseModel):
    id: str = Field(default_factory=lambda: f"ner-{secrets.token_hex(12)}")
    object: Literal["list"] = "list"
    model: str
    data: list[NerResult]
    usage: NerUsage
