"""The continuous-batching engine: one thread, one running batch, many adapters.

Each step
  1. drops aborted requests,
  2. admits waiting requests while rows, the prefill token budget and adapter slots allow
     (a request whose adapter cannot get a slot waits without holding up the others),
  3. prefills the admitted prompts together (left-padded, each row with its own adapter slot),
     samples their first tokens and merges the rows that go on into the running batch,
  4. runs one decode step over the whole running batch, whatever mix of adapters it holds.
Finished sequences leave the batch (and unpin their slot) as soon as they finish.

HTTP handlers only call ``submit`` and ``abort``; output goes back through each request's
``emit`` callback. ``step`` can be driven directly (tests) instead of ``start``-ing the thread.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass

import torch
from torch import nn

from enginehouse.runtime.lora.layers import MultiLoRAModel
from enginehouse.runtime.lora.slots import SlotTable
from enginehouse.runtime.textgen.batch import GrowingCache, KVBatch, left_pad
from enginehouse.runtime.textgen.chooser import TokenChooser
from enginehouse.runtime.textgen.grammar import GrammarEngine
from enginehouse.runtime.textgen.logits import LogitAdjuster, TokenLogprob, prompt_logprobs
from enginehouse.runtime.textgen.sampling import make_generator
from enginehouse.runtime.textgen.sequence import GenerationEvent, GenerationRequest, Sequence
from enginehouse.runtime.textgen.timers import StepTimers
from enginehouse.runtime.textgen.tokenizer import SafeTokenizer

log = logging.getLogger(__name__)

# How long the thread sleeps when waiting requests cannot be admitted yet and nothing runs.
_IDLE_POLL_S = 0.05


@dataclass(frozen=True)
class EngineConfig:
    max_batch_size: int
    max_prefill_tokens: int
    eos_token_ids: frozenset[int]
    # Width of the model's logits (penalty state is kept per token id).
    vocab_size: int
    # How long a request may wait for an adapter slot while others' adapters keep the slots busy.
    slot_patience_s: float = 2.0


class TextGenerationEngine:
    def __init__(
        self,
        lora: MultiLoRAModel,
        tokenizer: SafeTokenizer,
        config: EngineConfig,
        grammar: GrammarEngine | None = None,
    ) -> None:
        self.lora = lora
        self.model: nn.Module = lora.model
        self.tokenizer = tokenizer
        self.config = config
        self.slots = SlotTable(lora.num_slots - 1)
        self.device = next(self.model.parameters()).device
        self._forward_kwargs = _forward_style(self.model)
        self.chooser = TokenChooser(grammar)
        self._cond = threading.Condition()
        self._inbox: deque[GenerationRequest] = deque()
        self._aborted: set[str] = set()
        self._stopping = False
        self._thread: threading.Thread | None = None
        # Engine-thread state.
        self._waiting: deque[GenerationRequest] = deque()
        self._running: list[Sequence] = []
        self._batch: KVBatch | None = None
        # Where the steps' time goes (GET /metrics); the engine thread writes its phases, the event
        # loop ``encode`` (turning a stream's events into chunks).
        self.timers = StepTimers()

    # -- called from any thread ----------------------------------------------------------------

    def submit(self, request: GenerationRequest) -> None:
        with self._cond:
            self._inbox.append(request)
            self._cond.notify()

    def abort(self, request_id: str) -> None:
        """Stop a request (its client went away); its sequences leave at the next step."""
        with self._cond:
            self._aborted.add(request_id)
            self._cond.notify()

    def counts(self) -> tuple[int, int]:
        """(running sequences, waiting requests); a snapshot for health reports."""
        with self._cond:
            return len(self._running), len(self._waiting) + len(self._inbox)

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="textgen-engine", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._fail_everything("the replica is shutting down")

    # -- engine thread -------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not (self._stopping or self._inbox or self._aborted or self._running or self._waiting):
                    self._cond.wait()
                if self._stopping:
                    return
            if not self.step():
                with self._cond:
                    self._cond.wait(_IDLE_POLL_S)

    def step(self) -> bool:
        """One scheduling step; False when there was nothing it could do."""
        started = time.perf_counter()
        worked = self._step()
        if worked:
            self.timers.steps += 1
            self.timers.step += time.perf_counter() - started
        return worked

    def _step(self) -> bool:
        self._take_inbox()
        # Failures of the model itself are handled where they happen (the requests involved
        # fail, the engine goes on); anything else is a bug, and still must not end the thread.
        try:
            with torch.inference_mode():
                admitted = self._prefill_new()
                decoded = self._decode()
        except Exception:
            log.exception("engine step failed; failing the requests in flight")
            self._fail_running("the engine failed while generating; please retry")
            return True
        return admitted or decoded

    def _take_inbox(self) -> None:
        with self._cond:
            self._waiting.extend(self._inbox)
            self._inbox.clear()
            aborted, self._aborted = self._aborted, set()
        if not aborted:
            return
        self._waiting = deque(r for r in self._waiting if r.request_id not in aborted)
        keep = [i for i, seq in enumerate(self._running) if seq.request.request_id not in aborted]
        for seq in self._running:
            if seq.request.request_id in aborted:
                self.slots.release(seq.slot)
        self._keep_rows(keep)

    def _admit(self) -> list[tuple[GenerationRequest, int]]:
        free_rows = self.config.max_batch_size - len(self._running)
        admitted: list[tuple[GenerationRequest, int]] = []
        longest = 0
        starving = False
        now = time.monotonic()
        for request in list(self._waiting):
            n = request.params.n
            if n > free_rows:
                break  # keep arrival order for rows; a big request is not starved by small ones
            if starving and request.adapter is not None:
                continue  # let pinned slots drain so the starving adapter gets one
            if admitted and request.params.prompt_logprobs is not None:
                break  # its prefill keeps every position's logits: it goes in a prefill of its own
            cost = max(longest, len(request.prompt_ids)) * (len(admitted) + 1)
            if admitted and cost > self.config.max_prefill_tokens:
                break
            try:
                slot = self._pin_adapter(request)
            except Exception:
                log.exception("could not put adapter %s into a slot", request.adapter and request.adapter.name)
                self._waiting.remove(request)
                self._fail_request(request, "the replica could not place this adapter's weights; please retry")
                continue
            if slot is None:
                # Its adapter waits for a slot; later requests may still go, unless this one has
                # waited so long that other adapters must stop re-pinning the slots.
                starving = starving or now - request.arrival > self.config.slot_patience_s
                continue
            self._waiting.remove(request)
            admitted.append((request, slot))
            free_rows -= n
            longest = max(longest, len(request.prompt_ids))
            if request.params.prompt_logprobs is not None:
                break
        return admitted

    def _pin_adapter(self, request: GenerationRequest) -> int | None:
        if request.adapter is None:
            return 0
        grant = self.slots.acquire(request.adapter.load_id, count=request.params.n)
        if grant is None:
            return None
        if grant.needs_write:
            try:
                self.lora.write_slot(grant.slot, request.adapter.weights.modules)
            except Exception:
                self.slots.evict(grant.slot)  # half-written: never reuse it as this adapter
                raise
        return grant.slot

    def _sequence(self, request: GenerationRequest, choice: int, slot: int) -> Sequence:
        params = request.params
        adjuster = None
        if params.adjusts_logits:
            adjuster = LogitAdjuster(
                params, request.prompt_ids, self.config.vocab_size, self.config.eos_token_ids, self.device
            )
        generator = make_generator(params, choice, self.device)
        decode = self.tokenizer.decode_keeping_special if request.keep_special_tokens else self.tokenizer.decode
        return Sequence(request, choice, slot, decode, generator, adjuster)

    def _prefill_new(self) -> bool:
        admitted = self._admit()
        if not admitted:
            return False
        now = time.monotonic()
        self.timers.prefills += 1
        for request, _ in admitted:
            request.admitted = now
        sequences = [
            self._sequence(request, choice, slot) for request, slot in admitted for choice in range(request.params.n)
        ]
        try:
            batch, (tokens, logprobs) = self._prefill(admitted, sequences)
        except Exception:
            log.exception("prefill failed; failing the requests it was admitting")
            for seq in sequences:
                self.slots.release(seq.slot)
                _deliver(seq.request, seq.failed("the engine failed while reading the prompt; please retry"))
            return True
        keep = self._advance(sequences, tokens, logprobs)
        if keep:
            # Merging copies the joining rows into the running batch; a copy of their own first only
            # drops rows that already finished, or gives a new running batch room to grow.
            joined = batch if self._batch is not None and len(keep) == len(sequences) else batch.select(keep)
            self._batch = joined if self._batch is None else self._batch.merge(joined)
            self._running.extend(sequences[i] for i in keep)
        return True

    def _prefill(
        self, admitted: list[tuple[GenerationRequest, int]], sequences: list[Sequence]
    ) -> tuple[KVBatch, tuple[list[int], list[TokenLogprob | None]]]:
        prompts = [request.prompt_ids for request, _ in admitted]
        ids, mask, positions = left_pad(prompts, self.tokenizer.pad_token_id, self.device)
        cache = GrowingCache()
        # A request that wants its prompt's log-probabilities is prefilled alone (see _admit);
        # its prompt sits in the last columns (left padding), so those are the logits kept.
        wants_prompt = admitted[0][0].params.prompt_logprobs is not None
        keep = len(prompts[0]) if wants_prompt else 1
        logits = self._forward(ids, mask, positions, cache, [slot for _, slot in admitted], keep)
        batch = KVBatch(cache, mask)
        if wants_prompt:
            request = admitted[0][0]
            values = prompt_logprobs(logits[0, :-1], request.prompt_ids, request.params.prompt_logprobs or 0)
            for seq in sequences:
                seq.prompt_logprobs = values
        logits = logits[:, -1, :]
        if len(sequences) != len(admitted):  # n > 1: the choices share one prefill
            rows = [row for row, (request, _) in enumerate(admitted) for _ in range(request.params.n)]
            batch = batch.select(rows)
            logits = logits[rows]
        return batch, self._choose(sequences, logits)

    def _decode(self) -> bool:
        if not self._running or self._batch is None:
            return False
        batch = self._batch
        try:
            tokens = torch.tensor([[seq.last_token] for seq in self._running], device=self.device)
            mask = batch.grown_mask()
            positions = batch.next_positions()
            logits = self._forward(tokens, mask, positions, batch.cache, [s.slot for s in self._running])
            batch.mask = mask
            chosen, logprobs = self._choose(self._running, logits[:, -1, :])
            self.timers.decode_steps += 1
            self.timers.decode_rows += len(self._running)
        except Exception:
            log.exception("decode step failed; failing the running requests")
            self._fail_running("the engine failed while generating; please retry")
            return True
        self._keep_rows(self._advance(self._running, chosen, logprobs))
        return True

    def _forward(
        self,
        ids: torch.Tensor,
        mask: torch.Tensor,
        positions: torch.Tensor,
        cache: GrowingCache,
        slots: list[int],
        keep: int = 1,
    ) -> torch.Tensor:
        """The last ``keep`` positions' logits ``[rows, keep, vocab]`` in float32; ``cache`` grows
        in place."""
        started = time.perf_counter()
        lora_before = self.lora.routing.seconds
        self.lora.routing.set_rows(slots, self.device)
        try:
            kwargs = {self._forward_kwargs.cache_arg: cache}
            if self._forward_kwargs.logits_to_keep:
                kwargs["logits_to_keep"] = keep
            out = self.model(
                input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **kwargs
            )
        finally:
            self.lora.routing.clear()
        logits = out.logits[:, -keep:, :].float()
        # The LoRA terms ran inside this forward; each phase gets its own share.
        lora = self.lora.routing.seconds - lora_before
        self.timers.lora += lora
        self.timers.forward += time.perf_counter() - started - lora
        return logits

    def _choose(self, sequences: list[Sequence], logits: torch.Tensor) -> tuple[list[int], list[TokenLogprob | None]]:
        started = time.perf_counter()
        chosen = self.chooser.choose(sequences, logits)
        self.timers.sampling += time.perf_counter() - started
        return chosen

    def _advance(
        self, sequences: list[Sequence], tokens: list[int], logprobs: list[TokenLogprob | None]
    ) -> list[int]:
        """Give each sequence its token and emit what changed; the indexes still running."""
        keep: list[int] = []
        clock = time.perf_counter
        detokenize = emit = 0.0
        for index, (seq, token, logprob) in enumerate(zip(sequences, tokens, logprobs)):
            started = clock()
            event = seq.append(token, self.config.eos_token_ids, logprob)
            appended = clock()
            _deliver(seq.request, event)
            detokenize += appended - started
            emit += clock() - appended
            if seq.finished:
                self.slots.release(seq.slot)
            else:
                keep.append(index)
        self.timers.detokenize += detokenize
        self.timers.emit += emit
        return keep

    def _keep_rows(self, keep: list[int]) -> None:
        """Only the sequences at ``keep`` (increasing indexes) go on; the batch may reorder them."""
        if len(keep) == len(self._running):
            return
        if not keep or self._batch is None:
            self._running, self._batch = [], None
            return
        self._batch, order = self._batch.keep(keep)
        self._running = [self._running[i] for i in order]

    def _fail_running(self, message: str) -> None:
        for seq in self._running:
            self.slots.release(seq.slot)
            _deliver(seq.request, seq.failed(message))
        self._running = []
        self._batch = None

    def _fail_everything(self, message: str) -> None:
        self._fail_running(message)
        with self._cond:
            pending = list(self._waiting) + list(self._inbox)
            self._waiting.clear()
            self._inbox.clear()
        for request in pending:
            self._fail_request(request, message)

    @staticmethod
    def _fail_request(request: GenerationRequest, message: str) -> None:
        for choice in range(request.params.n):
            index = request.index_offset + choice
            _deliver(request, GenerationEvent(request.request_id, index, "", 0, error=message))


def _deliver(request: GenerationRequest, event: GenerationEvent) -> None:
    try:
        request.emit(event)
    except Exception:  # the consumer's loop may be closed; that must not stop the engine
        log.debug("could not deliver an event for %s", request.request_id, exc_info=True)


@dataclass(frozen=True)
class _ForwardStyle:
    cache_arg: str
    logits_to_keep: bool


def _forward_style(model: nn.Module) -> _ForwardStyle:
    """Recent transformers call the KV cache ``cache``; older models ``past_key_values``."""
    parameters = inspect.signature(model.forward).parameters
    cache_arg = "cache" if "cache" in parameters else "past_key_values"
    return _ForwardStyle(cache_arg, "logits_to_keep" in parameters)
