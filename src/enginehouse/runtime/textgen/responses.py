"""OpenAI response bodies and SSE streams built from a ``GenerationRun``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any, cast

from enginehouse.protocol.openai import (
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
)
from enginehouse.runtime.http import SSE_DONE, sse_event
from enginehouse.runtime.textgen.runs import GenerationFailed, GenerationRun, RunResult


def completion_body(result: RunResult, *, response_id: str, model: str, prompt_tokens: int) -> dict[str, Any]:
    choices = [
        CompletionChoice(index=i, text=c.text, finish_reason=_reason(c.finish_reason))
        for i, c in sorted(result.choices.items())
    ]
    usage = Usage.of(prompt_tokens, result.completion_tokens)
    return CompletionResponse(id=response_id, model=model, choices=choices, usage=usage).model_dump()


def chat_body(result: RunResult, *, response_id: str, model: str, prompt_tokens: int) -> dict[str, Any]:
    choices = [
        ChatChoice(index=i, message=AssistantMessage(content=c.text), finish_reason=_reason(c.finish_reason))
        for i, c in sorted(result.choices.items())
    ]
    usage = Usage.of(prompt_tokens, result.completion_tokens)
    return ChatCompletionResponse(id=response_id, model=model, choices=choices, usage=usage).model_dump()


async def completion_stream(
    run: GenerationRun, *, response_id: str, model: str, include_usage: bool
) -> AsyncIterator[str]:
    completion_tokens: dict[int, int] = {}
    async with aclosing(run.events()) as events:
        async for event in events:
            if event.error is not None:
                yield sse_event(GenerationFailed(event.error).to_body())
                break
            completion_tokens[event.index] = event.completion_tokens
            if not event.text and event.finish_reason is None:
                continue
            reason = _reason(event.finish_reason)
            choice = CompletionChoice(index=event.index, text=event.text, finish_reason=reason)
            yield sse_event(CompletionResponse(id=response_id, model=model, choices=[choice]))
    if include_usage:
        usage = Usage.of(run.prompt_tokens, sum(completion_tokens.values()))
        yield sse_event(CompletionResponse(id=response_id, model=model, choices=[], usage=usage))
    yield SSE_DONE


async def chat_stream(
    run: GenerationRun, *, response_id: str, model: str, include_usage: bool
) -> AsyncIterator[str]:
    # As OpenAI does: each choice opens with an empty assistant delta that carries the role.
    for index in range(run.choice_count):
        opening = ChatChunkChoice(index=index, delta=DeltaMessage(role="assistant", content=""))
        yield sse_event(ChatCompletionChunk(id=response_id, model=model, choices=[opening]))
    completion_tokens: dict[int, int] = {}
    async with aclosing(run.events()) as events:
        async for event in events:
            if event.error is not None:
                yield sse_event(GenerationFailed(event.error).to_body())
                break
            completion_tokens[event.index] = event.completion_tokens
            if event.text:
                delta = ChatChunkChoice(index=event.index, delta=DeltaMessage(content=event.text))
                yield sse_event(ChatCompletionChunk(id=response_id, model=model, choices=[delta]))
            if event.finish_reason is not None:
                reason = _reason(event.finish_reason)
                end = ChatChunkChoice(index=event.index, delta=DeltaMessage(), finish_reason=reason)
                yield sse_event(ChatCompletionChunk(id=response_id, model=model, choices=[end]))
    if include_usage:
        usage = Usage.of(run.prompt_tokens, sum(completion_tokens.values()))
        yield sse_event(ChatCompletionChunk(id=response_id, model=model, choices=[], usage=usage))
    yield SSE_DONE


def _reason(reason: str | None) -> FinishReason | None:
    return cast(FinishReason | None, reason)
