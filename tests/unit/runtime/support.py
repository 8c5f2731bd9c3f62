"""Helpers for runtime tests: an in-process text-generation runner over the tiny Llama, driven
step by step (no engine thread), and a collector of the engine's events."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from enginehouse.protocol.sampling import SamplingParams
from enginehouse.runtime.textgen.runner import TextGenerationRunner
from enginehouse.runtime.textgen.sequence import GenerationEvent, GenerationRequest

PROMPTS = ["the cat sat on the", "once upon a time there was", "models serve many adapters", "Hello"]


@dataclass
class Collector:
    """Receives engine events (from whichever thread) and answers questions about them."""

    events: list[GenerationEvent] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, event: GenerationEvent) -> None:
        with self.lock:
            self.events.append(event)

    def of(self, request_id: str, index: int = 0) -> list[GenerationEvent]:
        return [e for e in self.events if e.request_id == request_id and e.index == index]

    def tokens(self, request_id: str, index: int = 0) -> list[int]:
        return [e.token_id for e in self.of(request_id, index) if e.token_id is not None]

    def text(self, request_id: str, index: int = 0) -> str:
        return "".join(e.text for e in self.of(request_id, index))

    def finish(self, request_id: str, index: int = 0) -> str | None:
        finals = [e for e in self.of(request_id, index) if e.final]
        return (finals[-1].finish_reason or finals[-1].error) if finals else None

    def done(self, request: GenerationRequest) -> bool:
        return all(self.finish(request.request_id, request.index_offset + c) for c in range(request.params.n))


class Harness:
    """A loaded runner whose engine the test steps by hand, so arrival times are exact."""

    def __init__(self, runner: TextGenerationRunner) -> None:
        self.runner = runner
        self.engine = runner.engine
        self.registry = runner.registry
        self.collector = Collector()
        self._count = 0
        self.tokenizer = runner.serving.tokenizer

    def encode(self, prompt: str) -> list[int]:
        return self.tokenizer.encode(prompt)

    def request(self, prompt: str | list[int], adapter: str | None = None, **params: object) -> GenerationRequest:
        self._count += 1
        handle = None
        if adapter is not None:
            entry = self.registry.get(adapter)
            assert entry is not None, adapter
            handle = self.registry.acquire(entry)
        ids = self.encode(prompt) if isinstance(prompt, str) else list(prompt)
        settings = {"temperature": 0.0, "max_tokens": 12, **params}
        return GenerationRequest(
            request_id=f"r{self._count}",
            prompt_ids=ids,
            params=SamplingParams(**settings),  # type: ignore[arg-type]
            emit=self.collector,
            adapter=handle,
        )

    def submit(self, *requests: GenerationRequest) -> None:
        for request in requests:
            self.engine.submit(request)

    def run(self, *requests: GenerationRequest, max_steps: int = 500) -> None:
        """Step until every given request has finished."""
        for _ in range(max_steps):
            if all(self.collector.done(r) for r in requests):
                return
            self.engine.step()
        raise AssertionError("requests did not finish")
