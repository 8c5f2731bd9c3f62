"""The asyncio side of a generation: submit engine requests, receive their events on the loop.

The engine thread calls ``emit``; it hops onto the event loop with ``call_soon_threadsafe`` and
lands in an ``asyncio.Queue``. Leaving ``events()`` early (a client hung up) aborts the
requests, so the engine frees their rows at its next step. When ``events()`` ends, however it
ends, the run reports itself to the replica's metrics once.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field

import llguidance

from enginehouse.errors import EnginehouseError
from enginehouse.protocol.sampling import SamplingParams
from enginehouse.runtime.lora.registry import AdapterHandle
from enginehouse.runtime.metrics import STATUS_ABORTED, STATUS_ERROR, STATUS_OK, ReplicaMetrics, RequestRecord
from enginehouse.runtime.textgen.logits import TokenLogprob
from enginehouse.runtime.textgen.scheduler import TextGenerationEngine
from enginehouse.runtime.textgen.sequence import GenerationEvent, GenerationRequest
from enginehouse.runtime.textgen.timers import StepTimers


class GenerationFailed(EnginehouseError):
    """The engine could not finish a request (a fault, or shutdown); worth retrying."""

    status_code = 503
    error_type = "service_unavailable"
    code = "generation_failed"


@dataclass
class ChoiceResult:
    text: str = ""
    finish_reason: str | None = None
    completion_tokens: int = 0
    logprobs: list[TokenLogprob] = field(default_factory=list)
    prompt_logprobs: tuple[TokenLogprob, ...] | None = None


@dataclass
class RunResult:
    choices: dict[int, ChoiceResult] = field(default_factory=dict)

    @property
    def completion_tokens(self) -> int:
        return sum(c.completion_tokens for c in self.choices.values())


class GenerationRun:
    def __init__(
        self,
        engine: TextGenerationEngine,
        prompts: list[list[int]],
        params: list[SamplingParams],
        adapter: AdapterHandle | None,
        *,
        deployment: str = "",
        metrics: ReplicaMetrics | None = None,
        grammar: llguidance.LLMatcher | None = None,
        keep_special_tokens: bool = False,
    ) -> None:
        self._engine = engine
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[GenerationEvent] = asyncio.Queue()
        self._deployment = deployment
        self._metrics = metrics
        # Written once by the engine thread; read on the loop after the events that follow it.
        self._first_token_at: float | None = None
        self._tokens: dict[int, int] = {}  # choice index → tokens generated so far
        self._remaining = 0  # choices still waiting for their final event
        self._finished = False
        self.prompt_tokens = sum(len(p) for p in prompts)
        self.choice_count = sum(p.n for p in params)
        self._remaining = self.choice_count
        self._requests: list[GenerationRequest] = []
        offset = 0
        for prompt, prompt_params in zip(prompts, params):
            request = GenerationRequest(
                request_id=f"gen-{secrets.token_hex(8)}",
                prompt_ids=prompt,
                params=prompt_params,
                emit=self._emit,
                adapter=adapter,
                index_offset=offset,
                grammar=grammar,
                keep_special_tokens=keep_special_tokens,
            )
            self._requests.append(request)
            offset += prompt_params.n

    @property
    def timers(self) -> StepTimers:
        """The engine's phase timers, which the stream's encoding adds to."""
        return self._engine.timers

    def start(self) -> None:
        for request in self._requests:
            self._engine.submit(request)

    def abort(self) -> None:
        for request in self._requests:
            self._engine.abort(request.request_id)

    async def events(self) -> AsyncIterator[GenerationEvent]:
        """Every event until each choice has its final one; aborts the rest if left early."""
        failed = False
        try:
            while self._remaining:
                event = await self._queue.get()
                self._tokens[event.index] = event.completion_tokens
                failed = failed or event.error is not None
                if event.final:
                    self._remaining -= 1
                yield event
        finally:
            self._finish(failed)

    def close(self) -> None:
        """Whatever ``events()`` did not see through is aborted; for a response that may end
        without reading them all (its client left, even before the first event was asked for)."""
        self._finish(failed=False)

    def _finish(self, failed: bool) -> None:
        if self._finished:
            return
        self._finished = True
        if self._remaining:
            self.abort()
        self._report(STATUS_ERROR if failed else STATUS_ABORTED if self._remaining else STATUS_OK)

    async def collect(self) -> RunResult:
        """Wait for the whole answer; raises ``GenerationFailed`` if the engine failed it."""
        result = RunResult()
        async with aclosing(self.events()) as events:
            async for event in events:
                if event.error is not None:
                    raise GenerationFailed(event.error)
                choice = result.choices.setdefault(event.index, ChoiceResult())
                choice.text += event.text
                choice.completion_tokens = event.completion_tokens
                choice.finish_reason = event.finish_reason or choice.finish_reason
                if event.logprob is not None:
                    choice.logprobs.append(event.logprob)
                if event.prompt_logprobs is not None:
                    choice.prompt_logprobs = event.prompt_logprobs
        return result

    def _emit(self, event: GenerationEvent) -> None:
        # Engine thread: hand over to the loop thread; the queue is not thread-safe itself.
        # The first token is timed here, where it is made, not when the loop gets round to it.
        if self._first_token_at is None and event.token_id is not None:
            self._first_token_at = time.monotonic()
        self._loop.call_soon_threadsafe(self._queue.put_nowait, event)

    def _report(self, status: str) -> None:
        # Called once, by _finish.
        if self._metrics is None:
            return
        admitted = [r.admitted for r in self._requests if r.admitted is not None]
        self._metrics.record(RequestRecord(
            deployment=self._deployment,
            status=status,
            prompt_tokens=self.prompt_tokens,
            generation_tokens=sum(self._tokens.values()),
            arrival=min(r.arrival for r in self._requests),
            finished=time.monotonic(),
            # A run of several prompts started generating when the first of them got in.
            admitted=min(admitted) if admitted else None,
            first_token=self._first_token_at,
            longest_choice=max(self._tokens.values(), default=0),
        ))
