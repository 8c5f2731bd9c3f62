"""OpenAI-compatible request and response models for ``/v1/completions`` and
``/v1/chat/completions``.

The gateway validates client bodies with these before forwarding them, and the replica validates
again with the same models, so both agree on what is a bad request. Unknown fields are ignored
(clients send many we do not use). A failed validation raises ``pydantic.ValidationError``;
``describe_validation_error`` turns it into one message for a 400/422 answer.
"""

from __future__ import annotations

import secrets
import time
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
)

from enginehouse.protocol.sampling import SamplingParams

FinishReason = Literal["stop", "length"]
TokenId = Annotated[int, Field(ge=0)]

MAX_STOP_SEQUENCES = 4
MAX_N = 16


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class StreamOptions(_Lenient):
    include_usage: bool = False


class _GenerationRequest(_Lenient):
    """Fields shared by both endpoints; each is optional and None means the documented default."""

    model: str = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=-1)
    # torch generators accept any value that fits in 64 bits.
    seed: int | None = Field(default=None, ge=-(2**63), lt=2**64)
    stop: str | list[str] | None = None
    n: int | None = Field(default=None, ge=1, le=MAX_N)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    ignore_eos: bool | None = False
    user: str | None = None

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else (value or [])
        if len(stops) > MAX_STOP_SEQUENCES:
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences are allowed")
        if any(s == "" for s in stops):
            raise ValueError("stop sequences must not be empty strings")
        return value

    @property
    def include_usage(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)

    def to_sampling_params(self) -> SamplingParams:
        stops = [self.stop] if isinstance(self.stop, str) else (self.stop or [])
        top_k = self.top_k if self.top_k is not None and self.top_k > 0 else 0
        return SamplingParams(
            # max_completion_tokens is the newer name; when both are given it wins, as in OpenAI.
            max_tokens=self.max_completion_tokens or self.max_tokens,
            temperature=1.0 if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p,
            top_k=top_k,
            seed=self.seed,
            stop=tuple(dict.fromkeys(stops)),
            n=self.n or 1,
            ignore_eos=bool(self.ignore_eos),
        )


class CompletionRequest(_GenerationRequest):
    # One prompt (text or token ids) or a batch of them; each gets ``n`` choices.
    prompt: str | list[str] | list[TokenId] | list[list[TokenId]]

    @field_validator("prompt", mode="wrap")
    @classmethod
    def _check_prompt(cls, value: object, handler: ValidatorFunctionWrapHandler) -> object:
        # The union's own error lists every member's complaint; one sentence is clearer.
        try:
            prompt = handler(value)
        except ValidationError:
            raise ValueError(
                "prompt must be a string, a list of strings, a list of token ids (integers >= 0) "
                "or a list of token-id lists"
            ) from None
        if isinstance(prompt, list) and (not prompt or any(p == [] for p in prompt)):
            raise ValueError("prompt must not be empty")
        return prompt

    def prompts(self) -> list[str | list[int]]:
        """The prompt batch: a list whose items are text or token-id lists."""
        if isinstance(self.prompt, str):
            return [self.prompt]
        if all(isinstance(p, int) for p in self.prompt):
            return [list(self.prompt)]  # type: ignore[arg-type]
        return list(self.prompt)  # type: ignore[arg-type]


class TextPart(_Lenient):
    type: Literal["text"]
    text: str


class ImageUrl(_Lenient):
    url: str
    detail: str | None = None


class ImagePart(_Lenient):
    """Accepted on the wire for vision models; text-only models refuse it with a 400."""

    type: Literal["image_url"]
    image_url: ImageUrl


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class ChatMessage(_Lenient):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None

    @property
    def has_images(self) -> bool:
        return isinstance(self.content, list) and any(isinstance(p, ImagePart) for p in self.content)

    def text(self) -> str:
        """The message as plain text: text parts are joined by newlines, as vLLM does."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(p.text for p in self.content if isinstance(p, TextPart))


class ChatCompletionRequest(_GenerationRequest):
    messages: list[ChatMessage] = Field(min_length=1)


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, prompt_tokens: int, completion_tokens: int) -> Usage:
        total = prompt_tokens + completion_tokens
        return cls(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, total_tokens=total)


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: None = None
    finish_reason: FinishReason | None = None


class CompletionResponse(BaseModel):
    """A whole answer, and also the shape of each streamed chunk (as in OpenAI's API)."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: None = None
    finish_reason: FinishReason | None = None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatChoice]
    usage: Usage


class DeltaMessage(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(BaseModel):
    index: int
    delta: DeltaMessage
    logprobs: None = None
    finish_reason: FinishReason | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


def new_completion_id() -> str:
    return f"cmpl-{secrets.token_hex(12)}"


def new_chat_completion_id() -> str:
    return f"chatcmpl-{secrets.token_hex(12)}"


def describe_validation_error(exc: ValidationError) -> tuple[str, str | None]:
    """One readable message for a failed body, and the first offending field as ``param``."""
    parts: list[str] = []
    param: str | None = None
    for error in exc.errors(include_url=False)[:5]:
        # Union members add their type name to the location (e.g. ``prompt.list[int].0``); that
        # is noise for a client, which only needs the path inside its own body.
        loc = [str(p) for p in error["loc"] if not _is_type_tag(p)]
        where = ".".join(loc)
        param = param or where or None
        message = str(error["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(dict.fromkeys(parts)), param


def _is_type_tag(part: object) -> bool:
    return isinstance(part, str) and ("[" in part or part in {"str", "int", "TextPart", "ImagePart"})
