"""Chat answers from engine events: content, tool calls read from the text or forced, and
log-probabilities, in one piece and streamed (the stream holds back what may be a call)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from enginehouse.runtime.textgen.chat_responses import ChatShape, ToolCalling, chat_body, chat_stream
from enginehouse.runtime.textgen.logits import TokenLogprob
from enginehouse.runtime.textgen.responses import TokenRenderer
from enginehouse.runtime.textgen.runs import ChoiceResult, RunResult
from enginehouse.runtime.textgen.sequence import GenerationEvent
from enginehouse.runtime.textgen.timers import StepTimers
from enginehouse.runtime.textgen.tool_calls import FORMATS

RENDERER = TokenRenderer(text=lambda token: f"<{token}>", raw_bytes=lambda token: bytes([token % 256]))


class _Events:
    """What chat_stream reads of a run: its events, choice count and prompt size."""

    def __init__(self, pieces: list[str], reason: str = "stop") -> None:
        self.choice_count = 1
        self.prompt_tokens = 3
        self.timers = StepTimers()
        self._events = [
            GenerationEvent("r", 0, text, i + 1, reason if i == len(pieces) - 1 else None, token_id=i,
                            logprob=TokenLogprob(i, -float(i), ((i, -float(i)),)))
            for i, text in enumerate(pieces)
        ]

    async def events(self) -> AsyncIterator[GenerationEvent]:
        for event in self._events:
            yield event


def _stream(pieces: list[str], tools: ToolCalling, reason: str = "stop") -> list[dict[str, Any]]:
    run = _Events(pieces, reason)

    async def collect() -> list[str]:
        shape = ChatShape("chatcmpl-1", "m", tools, RENDERER)
        return [chunk async for chunk in chat_stream(run, shape, include_usage=True)]  # type: ignore[arg-type]

    chunks = asyncio.run(collect())
    assert chunks[-1] == "data: [DONE]\n\n"
    assert run.timers.encode > 0  # the replica's step split counts chat streams' encoding too
    return [json.loads(chunk.removeprefix("data: ")) for chunk in chunks[:-1]]


def _content(chunks: list[dict[str, Any]]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


def test_a_stream_shows_content_and_holds_back_a_call() -> None:
    pieces = ["Checking", " now <tool", '_call>{"name": "get_time",', ' "arguments": {}}</tool_call>']
    chunks = _stream(pieces, ToolCalling(format=FORMATS["hermes"]))
    # "Checking" goes out at once; " now " only once it is clear "<tool" opens a call.
    deltas = [c["choices"][0]["delta"].get("content") for c in chunks if c["choices"]]
    assert deltas[1] == "Checking" and " now" in (deltas[2] or "")
    assert "<tool" not in _content(chunks)
    [calls] = [c["choices"][0]["delta"]["tool_calls"] for c in chunks if c["choices"]
               and c["choices"][0]["delta"].get("tool_calls")]
    assert calls[0]["function"] == {"name": "get_time", "arguments": "{}"} and calls[0]["index"] == 0
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["usage"]["completion_tokens"] == 4
    # Every token's log-probability goes out once, in order, whichever chunk carries it.
    streamed = [e["logprob"] for c in chunks if c["choices"] and c["choices"][0]["logprobs"]
                for e in c["choices"][0]["logprobs"]["content"]]
    assert streamed == [0.0, -1.0, -2.0, -3.0]


def test_text_that_is_no_call_is_all_content() -> None:
    pieces = ["a <tool", "box> is", " here"]
    chunks = _stream(pieces, ToolCalling(format=FORMATS["hermes"]))
    assert _content(chunks) == "a <toolbox> is here"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"


def test_a_forced_call_that_ran_out_of_tokens_stays_text() -> None:
    chunks = _stream(['[{"name": "get_', "time"], ToolCalling(forced=True), reason="length")
    assert _content(chunks) == '[{"name": "get_time'
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"


def test_whole_answers() -> None:
    result = RunResult({0: ChoiceResult(text='{"city": "Rome"}', finish_reason="stop", completion_tokens=5,
                                        logprobs=[TokenLogprob(7, -0.5, ((7, -0.5), (8, -1.5)))])})
    shape = ChatShape("chatcmpl-1", "m", ToolCalling(forced=True, forced_name="get_weather"), RENDERER)
    body = chat_body(result, shape, prompt_tokens=2)
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    assert choice["message"]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city": "Rome"}'}
    assert choice["logprobs"]["content"][0] == {
        "token": "<7>", "logprob": -0.5, "bytes": [7],
        "top_logprobs": [{"token": "<7>", "logprob": -0.5, "bytes": [7]}, {"token": "<8>", "logprob": -1.5, "bytes": [8]}],
    }
    plain = chat_body(result, ChatShape("chatcmpl-1", "m", ToolCalling(), None), prompt_tokens=2)
    assert plain["choices"][0]["message"] == {"role": "assistant", "content": '{"city": "Rome"}'}
    assert plain["choices"][0]["logprobs"] is None and plain["usage"]["total_tokens"] == 7
