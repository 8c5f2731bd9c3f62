"""What the engine is asked to do and what it answers, and one generated sequence's state."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import llguidance
import torch

from enginehouse.protocol.sampling import SamplingParams
from enginehouse.runtime.lora.registry import AdapterHandle
from enginehouse.runtime.textgen.detokenize import TextAccumulator
from enginehouse.runtime.textgen.logits import LogitAdjuster, TokenLogprob

log = logging.getLogger(__name__)

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
    # Its log-probabilities, when the request asked for them.
    logprob: TokenLogprob | None = None
    # On a choice's first event, when the request asked for the prompt's log-probabilities.
    prompt_logprobs: tuple[TokenLogprob, ...] | None = None

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
    # The compiled constraint of a structured answer; each choice decodes with a copy of it.
    grammar: llguidance.LLMatcher | None = None
    # Show special tokens in the text (tool-call markers that are special tokens must be seen).
    keep_special_tokens: bool = False
    # Choice indexes start here (a completion with several prompts numbers choices across them).
    index_offset: int = 0
    arrival: float = field(default_factory=time.monotonic)
    # Set by the engine thread when the request joins the running batch (for queue-time metrics).
    admitted: float | None = None

    @property
    def max_tokens(self) -> int:
        return 1 if self.params.max_tokens is None else self.params.max_tokens


class Sequence:
    """One choice being generated; owned by the engine thread."""

    def __init__(
        self,
        request: GenerationRequest,
        choice: int,
        slot: int,
        decode: Callable[[list[int]], str],
        generator: torch.Generator | None,
        adjuster: LogitAdjuster | None = None,
    ) -> None:
        self.request = request
        self.choice = choice
        self.slot = slot
        self.generator = generator
        self.adjuster = adjuster
        self.matcher = request.grammar.deep_copy() if request.grammar is not None else None
        self.text = TextAccumulator(decode, request.params.stop)
        self.last_token = -1
        self.generated = 0
        self.finish_reason: str | None = None
        # Set by the engine after the prefill, for the first event.
        self.prompt_logprobs: tuple[TokenLogprob, ...] | None = None

    @property
    def index(self) -> int:
        return self.request.index_offset + self.choice

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def append(self, token_id: int, eos_ids: frozenset[int], logprob: TokenLogprob | None = None) -> GenerationEvent:
        """Take the next token; decide whether the sequence is done; describe what changed."""
        prompt_logprobs, self.prompt_logprobs = self.prompt_logprobs, None
        if self.request.max_tokens == 0:
            # Only the prompt was wanted (echo): the token chosen after it is not part of the answer.
            self.finish_reason = FINISH_LENGTH
            return GenerationEvent(self.request.request_id, self.index, "", 0, FINISH_LENGTH,
                                   prompt_logprobs=prompt_logprobs)
        params = self.request.params
        self.last_token = token_id
        self.generated += 1
        if self.adjuster is not None:
            self.adjuster.observe(token_id)
        grammar_done = self.matcher is not None and self._consume(token_id)
        delta = ""
        if token_id in eos_ids and not params.ignore_eos:
            self.finish_reason = FINISH_STOP
            delta = self.text.finish()
            logprob = None  # the end of the answer is not a token of it
        else:
            delta = self.text.add(token_id, check_stops=self.generated > params.min_tokens)
            if self.text.stopped:
                self.finish_reason = FINISH_STOP
        if self.finish_reason is None and grammar_done:
            self.finish_reason = FINISH_STOP
            delta += self.text.finish()
        if self.finish_reason is None and self.generated >= self.request.max_tokens:
            self.finish_reason = FINISH_LENGTH
            delta += self.text.finish()
        return GenerationEvent(
            self.request.request_id, self.index, delta, self.generated, self.finish_reason, token_id=token_id,
            logprob=logprob, prompt_logprobs=prompt_logprobs,
        )

    def _consume(self, token_id: int) -> bool:
        """Advance the grammar; True when the structured answer is complete."""
        assert self.matcher is not None
        if not self.matcher.consume_token(token_id):
            # The mask only offers tokens the grammar accepts, so this is a bug: end the answer
            # here rather than fail the whole batch.
            log.error("the grammar refused token %d: %s", token_id, self.matcher.get_error())
            return True
        return self.matcher.is_stopped()

    def failed(self, message: str) -> GenerationEvent:
        return GenerationEvent(self.request.request_id, self.index, "", self.generated, error=message)
