"""``/v1/chat/completions`` answers built from a ``GenerationRun``, in one piece or streamed: the
assistant's content, its tool calls (read from the text, or the whole answer when a tool call was
forced) and its log-probabilities."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from enginehouse.protocol.responses import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatLogprobs,
    ChatCompletionResponse,
    DeltaFunctionCall,
    DeltaMessage,
    DeltaToolCall,
    FinishReason,
    ToolCall,
    Usage,
)
from enginehouse.runtime.http import SSE_DONE, StreamEnvelope, json_text, sse_event
from enginehouse.runtime.textgen.logits import TokenLogprob
from enginehouse.runtime.textgen.responses import TokenRenderer, finish_reason
from enginehouse.runtime.textgen.runs import GenerationFailed, GenerationRun, RunResult
from enginehouse.runtime.textgen.tool_calls import ToolCallFormat, forced_calls


@dataclass(frozen=True)
class ToolCalling:
    """How an answer may hold tool calls: all of it is a forced call (``required``, or the
    function ``forced_name`` names), or calls are read from the text in the model's ``format``."""

    forced: bool = False
    forced_name: str | None = None
    format: ToolCallFormat | None = None

    def holds_back(self, text: str) -> int:
        """How much of a partial answer a stream may show as content now."""
        if self.forced:
            return 0
        if self.format is not None:
            return self.format.content_before_calls(text)
        return len(text)

    def finish(self, text: str, reason: str | None) -> tuple[str | None, list[ToolCall], FinishReason | None]:
        """The complete answer as (content, tool calls, finish reason)."""
        if self.forced:
            calls = forced_calls(text, self.forced_name) if reason == "stop" else None
            if calls:
                return None, calls, "tool_calls"
            return text, [], finish_reason(reason)
        if self.format is not None:
            content, calls = self.format.split(text)
            if calls:
                return content or None, calls, "tool_calls"
        return text, [], finish_reason(reason)


@dataclass(frozen=True)
class ChatShape:
    response_id: str
    model: str
    tools: ToolCalling
    renderer: TokenRenderer | None
    # One timestamp for the answer, every chunk of a stream included (as OpenAI's are).
    created: int = field(default_factory=lambda: int(time.time()))


def chat_body(result: RunResult, shape: ChatShape, prompt_tokens: int) -> dict[str, Any]:
    choices = []
    for index, choice in sorted(result.choices.items()):
        content, calls, reason = shape.tools.finish(choice.text, choice.finish_reason)
        message = AssistantMessage(content=content, tool_calls=calls or None)
        logprobs = shape.renderer.chat(choice.logprobs) if shape.renderer is not None else None
        choices.append(ChatChoice(index=index, message=message, logprobs=logprobs, finish_reason=reason))
    usage = Usage.of(prompt_tokens, result.completion_tokens)
    return ChatCompletionResponse(id=shape.response_id, model=shape.model, created=shape.created, choices=choices,
                                  usage=usage).model_dump()


class _ChoiceStream:
    """One choice's text so far, what of it went out, and log-probabilities not yet sent."""

    def __init__(self) -> None:
        self.text = ""
        self.sent = 0
        self.logprobs: list[TokenLogprob] = []
        self.completion_tokens = 0


async def chat_stream(run: GenerationRun, shape: ChatShape, include_usage: bool) -> AsyncIterator[str]:
    # As OpenAI does: each choice opens with an empty assistant delta that carries the role.
    for index in range(run.choice_count):
        yield _chunk(shape, ChatChunkChoice(index=index, delta=DeltaMessage(role="assistant", content="")))
    choices: dict[int, _ChoiceStream] = {}
    timers = run.timers
    envelope = StreamEnvelope(_chunk_model(shape, []))
    async with aclosing(run.events()) as events:
        async for event in events:
            started = time.perf_counter()
            if event.error is not None:
                yield sse_event(GenerationFailed(event.error).to_body())
                break
            state = choices.setdefault(event.index, _ChoiceStream())
            state.text += event.text
            state.completion_tokens = event.completion_tokens
            if event.logprob is not None:
                state.logprobs.append(event.logprob)
            if event.finish_reason is None:
                shown = shape.tools.holds_back(state.text)
                chunks = [_content(shape, envelope, event.index, state, shown)] if shown > state.sent else []
            else:
                chunks = _final_chunks(shape, envelope, event.index, state, event.finish_reason)
            timers.encode += time.perf_counter() - started
            for chunk in chunks:
                yield chunk
    if include_usage:
        usage = Usage.of(run.prompt_tokens, sum(c.completion_tokens for c in choices.values()))
        yield sse_event(_chunk_model(shape, [], usage))
    yield SSE_DONE


def _content(shape: ChatShape, envelope: StreamEnvelope, index: int, state: _ChoiceStream, until: int) -> str:
    text = state.text[state.sent:until]
    state.sent = until
    if shape.renderer is None:  # a token's chunk, the common case: spliced, not dumped
        return envelope.event(content_choice_json(index, text))
    delta = DeltaMessage(content=text)
    return _chunk(shape, ChatChunkChoice(index=index, delta=delta, logprobs=_take_logprobs(shape, state)))


def content_choice_json(index: int, content: str) -> str:
    """``ChatChunkChoice(index, delta=DeltaMessage(content=content))`` as its model writes it
    (tests/unit/runtime/test_stream_chunks.py holds the two to the same JSON)."""
    delta = f'{{"role":null,"content":{json_text(content)}}}'
    return f'{{"index":{index},"delta":{delta},"logprobs":null,"finish_reason":null}}'


def _final_chunks(shape: ChatShape, envelope: StreamEnvelope, index: int, state: _ChoiceStream,
                  reason: str) -> list[str]:
    content, calls, final_reason = shape.tools.finish(state.text, reason)
    chunks = []
    # The content is the text, or the part of it before the calls: what is left of it goes now.
    if content is not None and len(content) > state.sent:
        chunks.append(_content(shape, envelope, index, state, len(content)))
    if calls:
        deltas = [
            DeltaToolCall(index=k, id=call.id, type="function",
                          function=DeltaFunctionCall(name=call.function.name, arguments=call.function.arguments))
            for k, call in enumerate(calls)
        ]
        chunks.append(_chunk(shape, ChatChunkChoice(index=index, delta=DeltaMessage(tool_calls=deltas),
                                                    logprobs=_take_logprobs(shape, state))))
    end = ChatChunkChoice(index=index, delta=DeltaMessage(), logprobs=_take_logprobs(shape, state),
                          finish_reason=final_reason)
    chunks.append(_chunk(shape, end))
    return chunks


def _take_logprobs(shape: ChatShape, state: _ChoiceStream) -> ChatLogprobs | None:
    if shape.renderer is None or not state.logprobs:
        return None
    logprobs = shape.renderer.chat(state.logprobs)
    state.logprobs = []
    return logprobs


def _chunk(shape: ChatShape, choice: ChatChunkChoice) -> str:
    return sse_event(_chunk_model(shape, [choice]))


def _chunk_model(shape: ChatShape, choices: list[ChatChunkChoice], usage: Usage | None = None) -> ChatCompletionChunk:
    return ChatCompletionChunk(id=shape.response_id, model=shape.model, created=shape.created, choices=choices,
                               usage=usage)
