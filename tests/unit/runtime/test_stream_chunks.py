"""A token's stream chunk is spliced from a per-stream envelope and a hand-written choice, not
dumped by the response models: the two must write the same JSON, whatever the text holds, and
every chunk of one stream carries the same ``created``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from enginehouse.protocol.responses import (
    ChatChunkChoice,
    ChatCompletionChunk,
    CompletionChoice,
    CompletionResponse,
    DeltaMessage,
)
from enginehouse.runtime.http import StreamEnvelope
from enginehouse.runtime.textgen.chat_responses import ChatShape, ToolCalling, chat_stream, content_choice_json
from enginehouse.runtime.textgen.responses import CompletionShape, completion_stream, plain_choice_json
from enginehouse.runtime.textgen.sequence import GenerationEvent
from enginehouse.runtime.textgen.timers import StepTimers

TEXTS = ["", "hello", ' quote " and \\ backslash', "new\nline\ttab", "é 中 🙂", "\u2028\u2029", "\x00\x01\x1f\x7f",
         "</script>"]


def _parsed(chunk: str) -> Any:
    assert chunk.startswith("data: ") and chunk.endswith("\n\n")
    return json.loads(chunk.removeprefix("data: "))


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize(("index", "reason"), [(0, None), (3, "stop"), (1, "length")])
def test_a_completion_chunk_is_what_the_model_writes(text: str, index: int, reason: str | None) -> None:
    envelope = CompletionResponse(id="cmpl-1", model="m", created=7, choices=[])
    spliced = StreamEnvelope(envelope).event(plain_choice_json(index, text, reason))
    choice = CompletionChoice(index=index, text=text, finish_reason=reason)  # type: ignore[arg-type]
    dumped = CompletionResponse(id="cmpl-1", model="m", created=7, choices=[choice]).model_dump_json()
    assert _parsed(spliced) == json.loads(dumped)


@pytest.mark.parametrize("text", TEXTS)
def test_a_chat_content_chunk_is_what_the_model_writes(text: str) -> None:
    envelope = ChatCompletionChunk(id="chatcmpl-1", model="m", created=7, choices=[])
    spliced = StreamEnvelope(envelope).event(content_choice_json(2, text))
    choice = ChatChunkChoice(index=2, delta=DeltaMessage(content=text))
    dumped = ChatCompletionChunk(id="chatcmpl-1", model="m", created=7, choices=[choice]).model_dump_json()
    assert _parsed(spliced) == json.loads(dumped)


def test_an_envelope_needs_an_empty_choice_list() -> None:
    with pytest.raises(ValueError, match="empty 'choices'"):
        StreamEnvelope(CompletionResponse(id="c", model="m", choices=[CompletionChoice(index=0, text="x")]))


class _Run:
    """What the stream encoders read of a run."""

    choice_count = 1
    prompt_tokens = 2

    def __init__(self, pieces: list[str]) -> None:
        self.timers = StepTimers()
        self._pieces = pieces

    async def events(self) -> AsyncIterator[GenerationEvent]:
        for i, text in enumerate(self._pieces):
            yield GenerationEvent("r", 0, text, i + 1, "stop" if i == len(self._pieces) - 1 else None, token_id=i)


def _collect(stream: AsyncIterator[str]) -> list[Any]:
    async def collect() -> list[str]:
        return [chunk async for chunk in stream]

    chunks = asyncio.run(collect())
    assert chunks[-1] == "data: [DONE]\n\n"
    return [_parsed(chunk) for chunk in chunks[:-1]]


def test_every_chunk_of_a_stream_has_the_answers_one_created() -> None:
    pieces = ["a", ' "b"', " ü", ""]
    completion = _collect(completion_stream(_Run(pieces), CompletionShape("cmpl-1", "m", 1, None, None, created=11),
                                            include_usage=True))  # type: ignore[arg-type]
    chat = _collect(chat_stream(_Run(pieces), ChatShape("chatcmpl-1", "m", ToolCalling(), None, created=12),
                                include_usage=True))  # type: ignore[arg-type]
    assert {chunk["created"] for chunk in completion} == {11}
    assert {chunk["created"] for chunk in chat} == {12}
    assert "".join(c["choices"][0]["text"] for c in completion if c["choices"]) == 'a "b" ü'
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chat if c["choices"]) == 'a "b" ü'
    assert [c["choices"][0]["finish_reason"] for c in completion if c["choices"]] == [None, None, None, "stop"]
    assert completion[-1]["usage"]["completion_tokens"] == 4 and chat[-1]["usage"]["completion_tokens"] == 4
