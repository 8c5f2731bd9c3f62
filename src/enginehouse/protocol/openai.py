"""OpenAI-compatible request models for ``/v1/completions`` and ``/v1/chat/completions``.

The gateway validates client bodies with these before forwarding them, and the replica validates
again with the same models, so both agree on what is a bad request. Every parameter of OpenAI's
two APIs is either honoured or refused with a 400 that names it; a field OpenAI does not have is
refused too, as OpenAI itself does. Types are strict: ``"false"`` is not a boolean. A failed
validation raises ``pydantic.ValidationError``; ``describe_validation_error`` turns it into one
message for a 400/422 answer.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

from enginehouse.protocol.responses import (  # noqa: F401  (re-exported for the serving modules)
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionResponse,
    CompletionChoice,
    CompletionResponse,
    DeltaMessage,
    FinishReason,
    Usage,
    new_chat_completion_id,
    new_completion_id,
)
from enginehouse.protocol.sampling import Guide, SamplingParams
from enginehouse.protocol.structured import (
    MAX_TOOLS,
    NamedToolChoice,
    ResponseFormat,
    StrictWire,
    Tool,
    ToolChoice,
    response_format_guide,
    tool_call_guide,
)

TokenId = Annotated[int, Field(ge=0)]

MAX_STOP_SEQUENCES = 4
MAX_N = 16
# The most alternatives a token's log-probabilities may list (OpenAI's chat limit; vLLM's too).
MAX_TOP_LOGPROBS = 20
MAX_LOGIT_BIAS = 1024
# A bound on any single request, far above any context a replica holds; the replica checks the
# real limit (its context length) and says what it is.
MAX_TOKENS_LIMIT = 1 << 20


def refuse(param: str, message: str) -> ValueError:
    """A cross-field error whose message starts with the parameter it is about; see
    ``describe_validation_error``, which turns the prefix into the error's ``param``."""
    return ValueError(f"{param}: {message}")


class StreamOptions(StrictWire):
    include_usage: bool = False
    # OpenAI pads chunks with random characters when this is true; we send no padding.
    include_obfuscation: bool | None = None

    @field_validator("include_obfuscation")
    @classmethod
    def _no_obfuscation(cls, value: bool | None) -> bool | None:
        if value:
            raise ValueError("stream obfuscation is not supported; leave it out or set it to false")
        return value


# Parameters of OpenAI's APIs this server cannot honour, each with what a client should know.
_UNSUPPORTED: dict[str, str] = {
    "audio": "audio output is not supported",
    "prediction": "predicted outputs are not supported",
    "web_search_options": "web search is not supported",
    "functions": "the deprecated 'functions' parameter is not supported; use 'tools'",
    "function_call": "the deprecated 'function_call' parameter is not supported; use 'tool_choice'",
    "reasoning_effort": "this model has no reasoning effort to set",
    "verbosity": "this model has no verbosity setting",
    "metadata": "metadata is kept only for stored completions, which this server does not store",
    "suffix": "suffix (text insertion) is not supported",
}


class _GenerationRequest(StrictWire):
    """Fields shared by both endpoints; each is optional and None means the documented default."""

    model: str = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_LIMIT)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_LIMIT)
    min_tokens: int | None = Field(default=None, ge=0, le=MAX_TOKENS_LIMIT)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=-1)
    min_p: float | None = Field(default=None, ge=0.0, le=1.0)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    repetition_penalty: float | None = Field(default=None, gt=0.0, le=2.0)
    # Token id (as JSON object keys are strings) → a bias from -100 to 100.
    logit_bias: dict[str, float] | None = None
    # torch generators accept any value that fits in 64 bits.
    seed: int | None = Field(default=None, ge=-(2**63), lt=2**64)
    stop: str | list[str] | None = None
    n: int | None = Field(default=None, ge=1, le=MAX_N)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    ignore_eos: bool | None = False
    response_format: ResponseFormat | None = None
    # Identifiers for the caller's own bookkeeping; they do not change the answer.
    user: str | None = Field(default=None, max_length=512)
    safety_identifier: str | None = Field(default=None, max_length=512)
    prompt_cache_key: str | None = Field(default=None, max_length=512)
    store: bool | None = None
    service_tier: Literal["auto", "default"] | None = None
    # Refused unless absent or null (see _UNSUPPORTED).
    metadata: Any = None

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else (value or [])
        if len(stops) > MAX_STOP_SEQUENCES:
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences are allowed")
        if any(s == "" for s in stops):
            raise ValueError("stop sequences must not be empty strings")
        return value

    @field_validator("logit_bias")
    @classmethod
    def _check_logit_bias(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is None:
            return None
        if len(value) > MAX_LOGIT_BIAS:
            raise ValueError(f"at most {MAX_LOGIT_BIAS} tokens may be biased")
        for key, bias in value.items():
            if not re.fullmatch(r"\d{1,9}", key):
                raise ValueError(f"keys must be token ids (non-negative integers), not {key[:40]!r}")
            if not -100.0 <= bias <= 100.0:
                raise ValueError(f"the bias of token {key} must be between -100 and 100")
        return value

    @field_validator("store")
    @classmethod
    def _not_stored(cls, value: bool | None) -> bool | None:
        if value:
            raise ValueError("this server does not store completions; leave store out or set it to false")
        return value

    @field_validator(*_UNSUPPORTED, mode="before", check_fields=False)
    @classmethod
    def _unsupported(cls, value: Any, info: ValidationInfo) -> Any:
        if value is not None:
            raise ValueError(_UNSUPPORTED[str(info.field_name)])
        return value

    @model_validator(mode="after")
    def _check_combinations(self) -> _GenerationRequest:
        if self.stream_options is not None and not self.stream:
            raise refuse("stream_options", "only allowed when stream is true")
        limit = self.max_completion_tokens or self.max_tokens
        if self.min_tokens and limit is not None and self.min_tokens > limit:
            raise refuse("min_tokens", f"min_tokens ({self.min_tokens}) exceeds max_tokens ({limit})")
        if self.min_tokens and self.guide() is not None:
            raise refuse("min_tokens", "cannot be combined with structured output, which ends when the answer "
                                       "is complete")
        return self

    @property
    def include_usage(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)

    def guide(self) -> Guide | None:
        return response_format_guide(self.response_format)

    def to_sampling_params(self) -> SamplingParams:
        stops = [self.stop] if isinstance(self.stop, str) else (self.stop or [])
        top_k = self.top_k if self.top_k is not None and self.top_k > 0 else 0
        bias = tuple(sorted((int(token), value) for token, value in (self.logit_bias or {}).items()))
        return SamplingParams(
            # max_completion_tokens is the newer name; when both are given it wins, as in OpenAI.
            max_tokens=self.max_completion_tokens or self.max_tokens,
            temperature=1.0 if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p,
            top_k=top_k,
            min_p=self.min_p or 0.0,
            seed=self.seed,
            stop=tuple(dict.fromkeys(stops)),
            n=self.n or 1,
            ignore_eos=bool(self.ignore_eos),
            min_tokens=self.min_tokens or 0,
            presence_penalty=self.presence_penalty or 0.0,
            frequency_penalty=self.frequency_penalty or 0.0,
            repetition_penalty=1.0 if self.repetition_penalty is None else self.repetition_penalty,
            logit_bias=bias,
            logprobs=self.token_logprobs(),
            prompt_logprobs=self.prompt_logprobs(),
            guide=self.guide(),
        )

    def token_logprobs(self) -> int | None:
        """How many alternatives each generated token's log-probabilities list (None: none)."""
        return None

    def prompt_logprobs(self) -> int | None:
        return None


class CompletionRequest(_GenerationRequest):
    # One prompt (text or token ids) or a batch of them; each gets ``n`` choices.
    prompt: str | list[str] | list[TokenId] | list[list[TokenId]]
    # With echo, max_tokens may be 0: the answer is the prompt (and its log-probabilities).
    max_tokens: int | None = Field(default=None, ge=0, le=MAX_TOKENS_LIMIT)
    echo: bool | None = False
    # The legacy API's log-probabilities: the chosen token's and this many alternatives.
    logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)
    # OpenAI's "generate best_of, return the n most likely"; only best_of == n (the default).
    best_of: int | None = Field(default=None, ge=1, le=MAX_N)
    suffix: Any = None

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

    @model_validator(mode="after")
    def _check_completion(self) -> CompletionRequest:
        if self.max_tokens == 0 and not self.echo:
            raise refuse("max_tokens", "must be at least 1 (0 is allowed only with echo)")
        if self.best_of is not None and self.best_of != (self.n or 1):
            raise refuse("best_of", "only best_of equal to n is supported; use n for several choices")
        return self

    def prompts(self) -> list[str | list[int]]:
        """The prompt batch: a list whose items are text or token-id lists."""
        if isinstance(self.prompt, str):
            return [self.prompt]
        if all(isinstance(p, int) for p in self.prompt):
            return [list(self.prompt)]  # type: ignore[arg-type]
        return list(self.prompt)  # type: ignore[arg-type]

    def token_logprobs(self) -> int | None:
        return self.logprobs

    def prompt_logprobs(self) -> int | None:
        return self.logprobs if self.echo else None


class TextPart(StrictWire):
    type: Literal["text"]
    text: str


class ImageUrl(StrictWire):
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(StrictWire):
    """Accepted on the wire for vision models; text-only models refuse it with a 400."""

    type: Literal["image_url"]
    image_url: ImageUrl


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class MessageFunctionCall(StrictWire):
    name: str
    arguments: str


class MessageToolCall(StrictWire):
    """A tool call an earlier assistant turn made (sent back so the model sees its own call)."""

    id: str
    type: Literal["function"]
    function: MessageFunctionCall


class ChatMessage(StrictWire):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[MessageToolCall] | None = None
    tool_call_id: str | None = None
    # What an assistant message of an earlier answer carries when a client sends it back as is;
    # none of it says anything to the model.
    refusal: None = None
    annotations: list[Any] | None = None
    audio: None = None
    function_call: None = None

    @model_validator(mode="after")
    def _fits_role(self) -> ChatMessage:
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only assistant messages carry tool_calls")
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs the tool_call_id it answers")
        return self

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

    def for_template(self) -> dict[str, Any]:
        """The message as chat templates expect it (tool-call arguments as JSON objects, as
        Hugging Face templates render them)."""
        # OpenAI's "developer" is the system prompt under a newer name; templates know "system".
        role = "system" if self.role == "developer" else self.role
        message: dict[str, Any] = {"role": role, "content": self.text()}
        if self.name is not None:
            message["name"] = self.name
        if self.tool_calls:
            message["tool_calls"] = [
                {"id": call.id, "type": "function",
                 "function": {"name": call.function.name, "arguments": _json_or_text(call.function.arguments)}}
                for call in self.tool_calls
            ]
        if self.tool_call_id is not None:
            message["tool_call_id"] = self.tool_call_id
        return message


def _json_or_text(arguments: str) -> Any:
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments


class ChatCompletionRequest(_GenerationRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    logprobs: bool | None = False
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)
    tools: list[Tool] | None = Field(default=None, max_length=MAX_TOOLS)
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    # Text is the only output this server makes.
    modalities: list[Literal["text"]] | None = None
    audio: Any = None
    prediction: Any = None
    web_search_options: Any = None
    functions: Any = None
    function_call: Any = None
    reasoning_effort: Any = None
    verbosity: Any = None

    @model_validator(mode="after")
    def _check_chat(self) -> ChatCompletionRequest:
        if self.top_logprobs is not None and not self.logprobs:
            raise refuse("top_logprobs", "requires logprobs to be true")
        if self.tool_choice is not None and not self.tools:
            raise refuse("tool_choice", "only allowed when tools are given")
        if self.parallel_tool_calls is not None and not self.tools:
            raise refuse("parallel_tool_calls", "only allowed when tools are given")
        names = [tool.function.name for tool in self.tools or []]
        if len(set(names)) != len(names):
            raise refuse("tools", "function names must be unique")
        if isinstance(self.tool_choice, NamedToolChoice) and self.tool_choice.function.name not in names:
            raise refuse("tool_choice", f"names a function that is not in tools: {self.tool_choice.function.name!r}")
        if self.forces_tool_call and self.response_format is not None and self.response_format.type != "text":
            raise refuse("response_format", "cannot be combined with a tool_choice that forces a tool call")
        return self

    @property
    def forces_tool_call(self) -> bool:
        return self.tool_choice == "required" or isinstance(self.tool_choice, NamedToolChoice)

    @property
    def offers_tools(self) -> bool:
        """Whether the answer may hold tool calls (tools given, and tool_choice is not "none")."""
        return bool(self.tools) and self.tool_choice != "none"

    def guide(self) -> Guide | None:
        if self.forces_tool_call:
            return tool_call_guide(self.tools or [], self.tool_choice, self.parallel_tool_calls is not False)
        return super().guide()

    def token_logprobs(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None

    def template_tools(self) -> list[dict[str, Any]] | None:
        """The tools as chat templates take them (OpenAI's JSON shape)."""
        if not self.tools:
            return None
        return [tool.model_dump(exclude_none=True) for tool in self.tools]


def describe_validation_error(exc: ValidationError) -> tuple[str, str | None]:
    """One readable message for a failed body, and the first offending field as ``param``."""
    parts: list[str] = []
    param: str | None = None
    for error in exc.errors(include_url=False)[:5]:
        where, message = describe_validation_item(error)
        param = param or where or None
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(dict.fromkeys(parts)), param


def describe_validation_item(error: Any) -> tuple[str, str]:
    """One failed check of a body as (where, message): the dotted path in the client's own body
    ("" for the body as a whole) and what is wrong there."""
    # Union members add their type name to the location (e.g. ``prompt.list[int].0``); that
    # is noise for a client, which only needs the path inside its own body.
    where = ".".join(str(p) for p in error["loc"] if not _is_type_tag(p))
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unrecognized parameter; this server does not know it (see the API reference)"
    if not where and (named := re.match(r"([A-Za-z_][\w.]*): ", message)):
        # A cross-field check names its parameter first (see ``refuse``).
        where, message = named.group(1), message[named.end():]
    return where, message


def _is_type_tag(part: object) -> bool:
    if not isinstance(part, str):
        return False
    return "[" in part or part in {"str", "int", "float", "bool", "TextPart", "ImagePart", "NamedToolChoice"}
