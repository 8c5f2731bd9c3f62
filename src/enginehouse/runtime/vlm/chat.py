"""``POST /v1/chat/completions`` on a vlm-generation replica, streamed (SSE) or not.

Generation runs on the runner's single worker thread, one request at a time; tokens cross to the
event loop through a queue, and a client that leaves stops its generation at the next token.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

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
from enginehouse.runtime.http import SSE_DONE, parse_body, sse_event, sse_response
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


class VlmChatServing(SingleModelServing[VlmGenerator]):
    def __init__(self, slot: ModelSlot[VlmGenerator], executor: ThreadPoolExecutor) -> None:
        self.slot = slot
        self.executor = executor

    def router(self) -> APIRouter:
        router = super().router()
        router.add_api_route("/v1/chat/completions", self.chat_completions, methods=["POST"])
        return router

    async def chat_completions(self, request: Request) -> Response:
        body = await parse_body(request, ChatCompletionRequest)
        served = self.resolve(body.model)
        model = served.model
        params = body.to_sampling_params()
        if params.n != 1:
            raise BadRequestError("vlm-generation engines produce one choice per request (n=1)", param="n")
        loop = asyncio.get_running_loop()
        # On the model's own thread: the processor's tokenizer is not safe to share between threads.
        inputs = await loop.run_in_executor(self.executor, model.prepare, body)
        prompt_tokens = int(inputs["input_ids"].shape[1])
        max_tokens = model.resolve_max_tokens(params, prompt_tokens)
        events: asyncio.Queue[_Event] = asyncio.Queue()
        cancelled = threading.Event()

        def work() -> None:
            text = TextAccumulator(model.decode, params.stop)
            count = 0

            def on_token(token: int) -> bool:
                nonlocal count
                count += 1
                delta = text.add(token)
                if delta:
                    loop.call_soon_threadsafe(events.put_nowait, _Event(delta, completion_tokens=count))
                return not (text.stopped or cancelled.is_set())

            try:
                reason = model.generate(inputs, params, max_tokens, on_token)
            except BaseException as exc:  # reported to the client; the worker thread carries on
                loop.call_soon_threadsafe(events.put_nowait, _Event(error=exc))
                return
            last = _Event(text.finish(), reason, count)
            loop.call_soon_threadsafe(events.put_nowait, last)

        job = loop.run_in_executor(self.executor, work)
        response_id = new_chat_completion_id()
        if body.stream:
            return sse_response(self._stream(events, job, cancelled, response_id, body.model, prompt_tokens,
                                             body.include_usage))
        try:
            pieces: list[str] = []
            while True:
                event = await events.get()
                if event.error is not None:
                    raise event.error
                pieces.append(event.text)
                if event.finish_reason is not None:
                    break
        finally:
            cancelled.set()
        choice = ChatChoice(index=0, message=AssistantMessage(content="".join(pieces)),
                            finish_reason=event.finish_reason)  # type: ignore[arg-type]
        answer = ChatCompletionResponse(id=response_id, model=body.model, choices=[choice],
                                        usage=Usage.of(prompt_tokens, event.completion_tokens))
        return JSONResponse(answer.model_dump())

    @staticmethod
    async def _stream(events: asyncio.Queue[_Event], job: asyncio.Future[None], cancelled: threading.Event,
                      response_id: str, model: str, prompt_tokens: int, include_usage: bool) -> AsyncIterator[str]:
        # Shaped as textgen's chat stream: a role-only opening delta, text deltas, a closing delta
        # with the finish reason, optional usage, then [DONE].
        try:
            opening = ChatChunkChoice(index=0, delta=DeltaMessage(role="assistant", content=""))
            yield sse_event(ChatCompletionChunk(id=response_id, model=model, choices=[opening]))
            completion_tokens = 0
            while True:
                event = await events.get()
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
                usage = Usage.of(prompt_tokens, completion_tokens)
                yield sse_event(ChatCompletionChunk(id=response_id, model=model, choices=[], usage=usage))
            yield SSE_DONE
        finally:
            cancelled.set()
