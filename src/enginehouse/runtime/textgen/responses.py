"""``/v1/completions`` answers built from a ``GenerationRun``: in one piece or as server-sent
events, with the prompt echoed and OpenAI's legacy log-probabilities when asked."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, cast

from enginehouse.protocol.responses import (
    ChatLogprobs,
    ChatTokenLogprob,
    CompletionChoice,
    CompletionLogprobs,
    CompletionResponse,
    FinishReason,
    TopLogprob,
    Usage,
)
from enginehouse.runtime.http import SSE_DONE, StreamEnvelope, json_text, sse_event
from enginehouse.runtime.textgen.logits import TokenLogprob
from enginehouse.runtime.textgen.runs import GenerationFailed, GenerationRun, RunResult


@dataclass(frozen=True)
class TokenRenderer:
    """How log-probabilities name tokens: their text (special tokens by name) and exact bytes
    (a token may hold part of a character, whose text alone cannot show it)."""

    text: Callable[[int], str]
    raw_bytes: Callable[[int], bytes]

    def top(self, entry: TokenLogprob) -> dict[str, float]:
        """The legacy shape's alternatives, the chosen token among them (as vLLM answers)."""
        alternatives: dict[str, float] = {}
        for token, logprob in entry.top:  # most likely first: a text shared by two keeps the higher
            alternatives.setdefault(self.text(token), logprob)
        if entry.logprob is not None:
            alternatives.setdefault(self.text(entry.token_id), entry.logprob)
        return alternatives

    def chat(self, entries: Sequence[TokenLogprob]) -> ChatLogprobs:
        return ChatLogprobs(content=[
            ChatTokenLogprob(
                token=self.text(entry.token_id),
                logprob=entry.logprob if entry.logprob is not None else 0.0,
                bytes=list(self.raw_bytes(entry.token_id)),
                top_logprobs=[
                    TopLogprob(token=self.text(token), logprob=logprob, bytes=list(self.raw_bytes(token)))
                    for token, logprob in entry.top
                ],
            )
            for entry in entries
        ])


@dataclass
class LegacyLogprobs:
    """Builds completions' column-wise log-probabilities, one token at a time; each token's
    ``text_offset`` is where it starts in the choice's text."""

    renderer: TokenRenderer
    offset: int = 0
    columns: CompletionLogprobs = field(default_factory=CompletionLogprobs)

    def add(self, entries: Sequence[TokenLogprob]) -> CompletionLogprobs:
        """Append ``entries``; the columns of just these (for a stream's chunk)."""
        chunk = CompletionLogprobs()
        for entry in entries:
            text = self.renderer.text(entry.token_id)
            for columns in (self.columns, chunk):
                columns.tokens.append(text)
                columns.token_logprobs.append(entry.logprob)
                columns.top_logprobs.append(self.renderer.top(entry) if entry.logprob is not None else None)
                columns.text_offset.append(self.offset)
            self.offset += len(text)
        return chunk


@dataclass(frozen=True)
class CompletionShape:
    """What a completion answer looks like beyond its generated text."""

    response_id: str
    model: str
    # Choices per prompt; choice i answers prompt i // n.
    n: int
    # The prompts' texts when echoed, else None.
    echo: list[str] | None
    # How tokens are shown when log-probabilities were asked for, else None.
    renderer: TokenRenderer | None
    # One timestamp for the answer, every chunk of a stream included (as OpenAI's are).
    created: int = field(default_factory=lambda: int(time.time()))

    def prefix(self, index: int) -> str:
        return self.echo[index // self.n] if self.echo is not None else ""


def completion_body(result: RunResult, shape: CompletionShape, prompt_tokens: int) -> dict[str, Any]:
    choices = []
    for index, choice in sorted(result.choices.items()):
        logprobs = None
        if shape.renderer is not None:
            columns = LegacyLogprobs(shape.renderer)
            columns.add([*(choice.prompt_logprobs or ()), *choice.logprobs])
            logprobs = columns.columns
        text = shape.prefix(index) + choice.text
        choices.append(CompletionChoice(index=index, text=text, logprobs=logprobs,
                                        finish_reason=finish_reason(choice.finish_reason)))
    usage = Usage.of(prompt_tokens, result.completion_tokens)
    return CompletionResponse(id=shape.response_id, model=shape.model, created=shape.created, choices=choices,
                              usage=usage).model_dump()


async def completion_stream(run: GenerationRun, shape: CompletionShape, include_usage: bool) -> AsyncIterator[str]:
    completion_tokens: dict[int, int] = {}
    columns: dict[int, LegacyLogprobs] = {}
    pending: dict[int, list[TokenLogprob]] = {}
    timers = run.timers
    envelope = StreamEnvelope(_chunk_model(shape, []))
    async with aclosing(run.events()) as events:
        async for event in events:
            started = time.perf_counter()
            if event.error is not None:
                yield sse_event(GenerationFailed(event.error).to_body())
                break
            index = event.index
            first = index not in completion_tokens
            completion_tokens[index] = event.completion_tokens
            waiting = pending.setdefault(index, [])
            waiting.extend(event.prompt_logprobs or ())
            if event.logprob is not None:
                waiting.append(event.logprob)
            text = (shape.prefix(index) if first else "") + event.text
            if not text and event.finish_reason is None:
                continue  # its log-probabilities go out with the next text
            if shape.renderer is None:
                chunk = envelope.event(plain_choice_json(index, text, event.finish_reason))
            else:
                logprobs = columns.setdefault(index, LegacyLogprobs(shape.renderer)).add(waiting)
                choice = CompletionChoice(index=index, text=text, logprobs=logprobs,
                                          finish_reason=finish_reason(event.finish_reason))
                chunk = sse_event(_chunk_model(shape, [choice]))
            waiting.clear()
            timers.encode += time.perf_counter() - started
            yield chunk
    if include_usage:
        usage = Usage.of(run.prompt_tokens, sum(completion_tokens.values()))
        yield sse_event(_chunk_model(shape, [], usage))
    yield SSE_DONE


def plain_choice_json(index: int, text: str, reason: str | None) -> str:
    """``CompletionChoice(index, text, finish_reason=reason)`` without log-probabilities, as its
    model writes it (tests/unit/runtime/test_stream_chunks.py holds the two to the same JSON)."""
    return f'{{"index":{index},"text":{json_text(text)},"logprobs":null,"finish_reason":{json_text(reason)}}}'


def _chunk_model(shape: CompletionShape, choices: list[CompletionChoice],
                 usage: Usage | None = None) -> CompletionResponse:
    return CompletionResponse(id=shape.response_id, model=shape.model, created=shape.created, choices=choices,
                              usage=usage)


def finish_reason(reason: str | None) -> FinishReason | None:
    return cast(FinishReason | None, reason)
