"""``POST /v1/chat/completions`` on a vlm-generation replica, streamed (SSE) or not.

Generation runs on the runner's single worker thread, one request at a time; tokens cross to the
event loop through a queue, and a client that leaves stops its generation at the next token: a
stream notices when its response ends (``sse_response``'s ``on_close``, which runs even when no
event was ever sent), a plain call by watching the connection (``unless_client_leaves``). A
request whose client left while it waited for the worker thread is not started at all. Each
request is counted in the replica's metrics once, as ``ok``, ``aborted`` or ``error``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from enginehouse.disconnect import unless_client_leaves
from enginehouse.errors import BadRequestError
from enginehouse.protocol.openai import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    DeltaMessage,
    Usage,
    new_chat_completion_id,
)
from enginehouse.protocol.sampling import SamplingParams
from enginehouse.runtime.http import SSE_DONE, parse_body, sse_event, sse_response
from enginehouse.runtime.metrics import STATUS_ABORTED, STATUS_ERROR, STATUS_OK, ReplicaMetrics, RequestRecord
from enginehouse.runtime.single.serving import SingleModelServing
from enginehouse.runtime.single.slot import ModelSlot
from enginehouse.runtime.textgen.detokenize import TextAccumulator
from enginehouse.runtime.vlm.generation import VlmGenerator


@dataclass
class _Event:
    text: str = ""
    finish_reason: str | None = None
    completion_tokens: int = 0
    error: BaseException | None = None


class _VlmRun:
    """One generation: ``work`` runs it on the worker thread, its events reach the event loop
    through ``events``; ``cancel`` (the client left) stops it at its next token."""

    def __init__(self, model: VlmGenerator, inputs: dict[str, Any], params: SamplingParams, max_tokens: int,
                 *, deployment: str, metrics: ReplicaMetrics | None) -> None:
        self.model, self.inputs, self.params, self.max_tokens = model, inputs, params, max_tokens
        self.prompt_tokens = int(inputs["input_ids"].shape[1])
        self.events: asyncio.Queue[_Event] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        self._cancelled = threading.Event()
        self._deployment = deployment
        self._metrics = metrics
        self._arrival = time.monotonic()

    def cancel(self) -> None:
        self._cancelled.set()

    def work(self) -> None:
        """On the worker thread: generate, handing each piece of text to the event loop."""
        if self._cancelled.is_set():  # its client left while it waited for the thread
            self._record(STATUS_ABORTED, 0, admitted=None, first_token=None)
            return
        admitted = time.monotonic()
        text = TextAccumulator(self.model.decode, self.params.stop)
        count = 0
        first_token: float | None = None
        client_left = False

        def on_token(token: int) -> bool:
            nonlocal count, first_token, client_left
            count += 1
            first_token = first_token or time.monotonic()
            delta = text.add(token, check_stops=count > self.params.min_tokens)
            if delta:
                self._emit(_Event(delta, completion_tokens=count))
            client_left = self._cancelled.is_set()
            return not (text.stopped or client_left)

        try:
            reason = self.model.generate(self.inputs, self.params, self.max_tokens, on_token)
        except BaseException as exc:  # reported to the client; the worker thread carries on
            self._record(STATUS_ERROR, count, admitted, first_token)
            self._emit(_Event(error=exc))
            return
        # Counted before the last event leaves: once the client has it, it may go at any moment.
        self._record(STATUS_ABORTED if client_left else STATUS_OK, count, admitted, first_token)
        self._emit(_Event(text.finish(), reason, count))

    async def collect(self) -> tuple[str, _Event]:
        """The whole answer's text and its last event (finish reason, token count)."""
        pieces: list[str] = []
        while True:
            event = await self.events.get()
            if event.error is not None:
                raise event.error
            pieces.append(event.text)
            if event.finish_reason is not None:
                return "".join(pieces), event

    def _emit(self, event: _Event) -> None:
        self._loop.call_soon_threadsafe(self.events.put_nowait, event)

    def _record(self, status: str, tokens: int, admitted: float | None, first_token: float | None) -> None:
        if self._metrics is None:
            return
        self._metrics.record(RequestRecord(
            deployment=self._deployment, status=status, prompt_tokens=self.prompt_tokens if admitted else 0,
            generation_tokens=tokens, arrival=self._arrival, finished=time.monotonic(), admitted=admitted,
            first_token=first_token, longest_choice=tokens,
        ))


def _refuse_what_it_cannot_honour(body: ChatCompletionRequest) -> None:
    """A vision-language model generates one plain-text answer at a time; a parameter asking for
    more is refused by name rather than ignored."""
    if (body.n or 1) != 1:
        raise BadRequestError("vlm-generation engines produce one choice per request (n=1)", param="n")
    unsupported = [
        ("logprobs", bool(body.logprobs)),
        ("tools", bool(body.tools)),
        ("response_format", body.response_format is not None and body.response_format.type != "text"),
    ]
    for param, asked in unsupported:
        if asked:
            raise BadRequestError(f"{param} is not supported by vlm-generation engines", param=param)


class VlmChatServing(SingleModelServing[VlmGenerator]):
    def __init__(self, slot: ModelSlot[VlmGenerator], executor: ThreadPoolExecutor,
                 metrics: ReplicaMetrics | None = None) -> None:
        self.slot = slot
        self.executor = executor
        self.metrics = metrics

    def router(self) -> APIRouter:
        router = super().router()
        router.add_api_route("/v1/chat/completions", self.chat_completions, methods=["POST"])
        return router

    async def chat_completions(self, request: Request) -> Response:
        body = await parse_body(request, ChatCompletionRequest)
        served = self.resolve(body.model)
        model = served.model
        params = body.to_sampling_params()
        _refuse_what_it_cannot_honour(body)
        loop = asyncio.get_running_loop()
        # On the model's own thread: the processor's tokenizer is not safe to share between threads.
        inputs = await loop.run_in_executor(self.executor, model.prepare, body)
        max_tokens = model.resolve_max_tokens(params, int(inputs["input_ids"].shape[1]))
        run = _VlmRun(model, inputs, params, max_tokens, deployment=served.name, metrics=self.metrics)
        loop.run_in_executor(self.executor, run.work)
        response_id = new_chat_completion_id()
        if body.stream:
            chunks = self._stream(run, response_id, body.model, body.include_usage)
            return sse_response(chunks, on_close=run.cancel)
        try:
            text, last = await unless_client_leaves(request, run.collect())
        finally:
            run.cancel()
        choice = ChatChoice(index=0, message=AssistantMessage(content=text),
                            finish_reason=last.finish_reason)  # type: ignore[arg-type]
        answer = ChatCompletionResponse(id=response_id, model=body.model, choices=[choice],
                                        usage=Usage.of(run.prompt_tokens, last.completion_tokens))
        return JSONResponse(answer.model_dump())

    @staticmethod
    async def _stream(run: _VlmRun, response_id: str, model: str, include_usage: bool) -> AsyncIterator[str]:
        # Shaped as textgen's chat stream: a role-only opening delta, text deltas, a closing delta
        # with the finish reason, optional usage, then [DONE].
        opening = ChatChunkChoice(index=0, delta=DeltaMessage(role="assistant", content=""))
        yield sse_event(ChatCompletionChunk(id=response_id, model=model, choices=[opening]))
        completion_tokens = 0
        while True:
            event = await run.events.get()
            if event.error is not None:
                yield sse_event({"error": {"message": "the model failed on this request; see the replica log",
                                           "type": "server_error", "code": "generation_failed"}})
                break
            completion_tokens = max(completion_tokens, event.completion_tokens)
            if event.text:
                delta = ChatChunkChoice(index=0, delta=DeltaMessage(content=event.text))
                yield sse_event(ChatCompletionChunk(id=response_id, model=model, choices=[delta]))
            if event.finish_reason is not None:
                end = ChatChunkChoice(index=0, delta=DeltaMessage(),
                                      finish_reason=event.finish_reason)  # type: ignore[arg-type]
                yield sse_event(ChatCompletionChunk(id=response_id, model=model, choices=[end]))
                break
        if include_usage:
            usage = Usage.of(run.prompt_tokens, completion_tokens)
            yield sse_event(ChatCompletionChunk(id=response_id, model=model, choices=[], usage=usage))
        yield SSE_DONE
