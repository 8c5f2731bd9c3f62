"""Request and response models of ``POST /v1/embeddings`` (OpenAI-compatible, SPEC §6).

The gateway validates client bodies with ``EmbeddingRequest`` and the replica validates again,
so both agree on what is a bad request. Unknown fields are refused (400).

Beyond OpenAI's fields, ``truncate: true`` asks for an input longer than the model's maximum
length to be cut to that length (keeping the model's special tokens); without it such an input is
a 400, as in OpenAI's API.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidatorFunctionWrapHandler, field_validator

TokenId = Annotated[int, Field(ge=0)]

# OpenAI's limit on the number of inputs in one request.
MAX_INPUTS = 2048


class EmbeddingRequest(BaseModel):
    # strict: "false" is not a boolean nor "5" a number, as in OpenAI's API.
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    model: str = Field(min_length=1)
    # One text, a list of texts, one token-id list or a list of token-id lists. Token ids are
    # embedded as given: no special tokens are added.
    input: str | list[str] | list[TokenId] | list[list[TokenId]]
    # None is what some clients send for "the default"; it means float.
    encoding_format: Literal["float", "base64"] | None = "float"
    dimensions: int | None = Field(default=None, ge=1)
    truncate: bool = False
    user: str | None = None

    @field_validator("input", mode="wrap")
    @classmethod
    def _check_input(cls, value: object, handler: ValidatorFunctionWrapHandler) -> object:
        try:
            checked = handler(value)
        except ValidationError:
            # The union's own error lists every member's complaint; one sentence is clearer.
            raise ValueError(
                "input must be a string, a list of strings, a list of token ids (integers >= 0) "
                "or a list of token-id lists"
            ) from None
        items = _batch(checked)
        if not items or any(item == "" or item == [] for item in items):
            raise ValueError("input must not be empty (nor contain an empty string or token list)")
        if len(items) > MAX_INPUTS:
            raise ValueError(f"at most {MAX_INPUTS} inputs are allowed in one request")
        return checked

    def inputs(self) -> list[str | list[int]]:
        """The batch: one item per embedding to return, each a text or a token-id list."""
        return _batch(self.input)

    @property
    def base64(self) -> bool:
        return self.encoding_format == "base64"


def _batch(value: str | list[str] | list[int] | list[list[int]]) -> list[str | list[int]]:
    if isinstance(value, str):
        return [value]
    if value and all(isinstance(item, int) for item in value):
        return [list(value)]  # type: ignore[arg-type]
    return list(value)  # type: ignore[arg-type]


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    # A list of floats, or with ``encoding_format: base64`` the little-endian float32 bytes of
    # that list, base64-encoded (as OpenAI sends them).
    embedding: list[float] | str


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: EmbeddingUsage
