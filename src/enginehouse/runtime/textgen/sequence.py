"""What the engine is asked to do and what it answers, and one generated sequence's state."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from enginehouse.protocol.sampling import SamplingParams
from enginehouse.runtime.lora.registry import AdapterHandle
from enginehouse.runtime.textgen.detokenize import TextAccumulator

FINISH_STOP = "stop"
FINISH_LENGTH = "length"


@dataclass(frozen=True)
class GenerationEvent:
    """New output of one choice. ``text`` may be empty; the last event has ``finish_reason``
    (or ``error``, when the engine failed the sequence)."""

    request_id: str
    index: int
    text: str
    completion_tokens: int
    finish_reason: str | None = None
    error: str | None = None
    # The token sampled in this step (None on error events); EOS included, for exact checks.
    token_id: int | None = None

    @property
    def final(self) -> bool:
        return self.finish_reason is not None or self.error is not None


@dataclass
class GenerationRequest:
    """One prompt with ``params.n`` choices. ``emit`` is called on the engine thread and must be
    thread-safe and quick (the serving layer hands events to its event loop)."""

    request_id: str
    prompt_ids: list[int]
    params: SamplingParams  # max_tokens already resolved
    emit: Callable[[GenerationEvent], None]
    adapter: AdapterHandle | None = None
    # Choice indexes start here (a completion with several prompts numbers choices across them).
    index_offset: int = 0
    arrival: float = field(default_factory=time.monotonic)
    # Set by the engine thread when the request joins the running batch (for queue-time metrics).
    admitted: float | None = None

    @property
    def max_tokens(self) -> int:
        return self.params.max_tokens or 1


class Sequence:
    """One choice being generated; owned by the engine thread."""

    def __init__(
        self,
        request: GenerationRequest,
        choice: int,
        slot: int,
        decode: Callable[[list[int]], str],
        generator: torch.Generator | None,
    ) -> None:
        self.request = request
        self.choice = choice
        self.slot = slot
        self.generator = generator
        self.text = TextAccumulator(decode, request.params.stop)
        self.last_token = -1
        self.generated = 0
        self.finish_reason: str | None = None

    @property
    def index(self) -> int:
        return self.request.index_offset + self.choice

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def append(self, token_id: int, eos_ids: frozenset[int]) -> GenerationEvent:
        """Take the next token; decide whether the sequence is done; describe what changed."""
        params = self.request.params
        self.last_token = token_id
        self.generated += 1
        delta = ""
        if token_id in eos_ids and not params.ignore_eos:
            self.finish_reason = FINISH_STOP
            delta = self.text.finish()
        else:
            delta = self.text.add(token_id)
            if self.text.stopped:
                self.finish_reason = FINISH_STOP
        if self.finish_reason is None and self.generated >= self.request.max_tokens:
            self.finish_reason = FINISH_LENGTH
            delta += self.text.finish()
        return GenerationEvent(
            self.request.request_id, self.index, delta, self.generated, self.finish_reason, token_id=token_id
        )

    def failed(self, message: str) -> GenerationEvent:
        return GenerationEvent(self.request.request_id, self.index, "", self.generated, error=message)
