"""The request batcher: concurrent calls, for any mix of deployments, share one forward pass.

Classification is one forward per input, so there is no running batch to keep (unlike text
generation): one thread takes the waiting inputs in arrival order, as many as ``max_batch_size``
rows and the padded-token budget allow, gives every row its deployment's LoRA slot and head,
runs the model once and hands each row's logits back. When the thread was idle it first waits a
few milliseconds, so that a burst of calls arriving together is batched rather than served one
by one. A request with more inputs than fit one forward is spread over several.

A batch holds at most ``max_loras`` distinct adapters; rows of further adapters wait for the next
forward (slots are all free again between forwards, so they never wait longer).

HTTP handlers only call ``submit``; results come back through each request's ``future``.
``step`` can be driven directly (tests) instead of ``start``-ing the thread.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field

import torch

from enginehouse.runtime.classify.heads import HeadBank
from enginehouse.runtime.classify.labels import HeadSpec
from enginehouse.runtime.lora.layers import MultiLoRAModel
from enginehouse.runtime.lora.registry import AdapterHandle
from enginehouse.runtime.lora.slots import SlotTable

log = logging.getLogger(__name__)


class ClassificationFailed(Exception):
    """The engine could not compute a request's logits; the message is for the client."""


@dataclass(frozen=True)
class BatcherConfig:
    max_batch_size: int
    # Padded tokens (rows x longest row) per forward; one longer input still goes, alone.
    max_batch_tokens: int
    pad_token_id: int
    # How long an idle batcher waits for more calls before its first forward.
    gather_s: float = 0.003


@dataclass(eq=False)
class ClassifyRequest:
    """One API call: its inputs' token ids, for one deployment (``adapter`` None: the base)."""

    rows: list[list[int]]
    adapter: AdapterHandle | None
    spec: HeadSpec
    arrival: float = field(default_factory=time.monotonic)
    # Set with a ``[len(rows), spec.size]`` float32 tensor, or a ``ClassificationFailed``.
    future: Future[torch.Tensor] = field(default_factory=Future)
    admitted: float | None = None
    _results: dict[int, torch.Tensor] = field(default_factory=dict)

    def deliver(self, row: int, logits: torch.Tensor) -> None:
        self._results[row] = logits
        if len(self._results) == len(self.rows) and not self.future.done():
            self.future.set_result(torch.stack([self._results[i] for i in range(len(self.rows))]))

    def fail(self, message: str) -> None:
        if not self.future.done():
            self.future.set_exception(ClassificationFailed(message))


@dataclass(frozen=True)
class _Row:
    request: ClassifyRequest
    index: int

    @property
    def ids(self) -> list[int]:
        return self.request.rows[self.index]


class ClassificationBatcher:
    def __init__(self, lora: MultiLoRAModel, heads: HeadBank, config: BatcherConfig) -> None:
        self.lora = lora
        self.model = lora.model
        self.heads = heads
        self.config = config
        self.slots = SlotTable(lora.num_slots - 1)
        self.device = next(self.model.parameters()).device
        # Decoders would build a KV cache nobody reads; encoders do not take the argument.
        self._no_cache = "use_cache" in inspect.signature(self.model.forward).parameters
        self._cond = threading.Condition()
        self._inbox: deque[ClassifyRequest] = deque()
        self._waiting: deque[_Row] = deque()  # batcher thread only
        self._running = 0
        self._stopping = False
        self._thread: threading.Thread | None = None

    # -- called from any thread ----------------------------------------------------------------

    def submit(self, request: ClassifyRequest) -> None:
        with self._cond:
            self._inbox.append(request)
            self._cond.notify()

    def counts(self) -> tuple[int, int]:
        """(rows in the forward now, rows waiting); a snapshot for health reports."""
        with self._cond:
            return self._running, len(self._waiting) + sum(len(r.rows) for r in self._inbox)

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="classify-batcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        with self._cond:
            pending = list(self._inbox) + [row.request for row in self._waiting]
            self._inbox.clear()
            self._waiting.clear()
        for request in pending:
            request.fail("the replica is shutting down")

    # -- batcher thread ------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not (self._stopping or self._inbox or self._waiting):
                    self._cond.wait()
                if self._stopping:
                    return
                idle = not self._waiting
            if idle and self.config.gather_s > 0:
                time.sleep(self.config.gather_s)
            self.step()

    def step(self) -> bool:
        """One forward over the next batch; False when nothing was waiting."""
        self._take_inbox()
        batch = self._select()
        if not batch:
            return False
        now = time.monotonic()
        for row, _ in batch:
            row.request.admitted = row.request.admitted or now
        with self._cond:
            self._running = len(batch)
        try:
            logits = self._forward([row.ids for row, _ in batch], [slot for _, slot in batch])
        except Exception:
            log.exception("classification forward failed; failing the requests in it")
            for row, _ in batch:
                row.request.fail("the engine failed while classifying; please retry")
        else:
            for position, (row, _) in enumerate(batch):
                row.request.deliver(row.index, logits[position, : row.request.spec.size].cpu())
        finally:
            for _, slot in batch:
                self.slots.release(slot)
            with self._cond:
                self._running = 0
        return True

    def _take_inbox(self) -> None:
        with self._cond:
            incoming = list(self._inbox)
            self._inbox.clear()
        for request in incoming:
            # False when the caller already gave up (cancelled): its rows never run.
            if request.future.set_running_or_notify_cancel():
                self._waiting.extend(_Row(request, i) for i in range(len(request.rows)))

    def _select(self) -> list[tuple[_Row, int]]:
        chosen: list[tuple[_Row, int]] = []
        longest = 0
        for row in list(self._waiting):
            if len(chosen) == self.config.max_batch_size:
                break
            if row.request.future.done():  # failed meanwhile (its adapter could not be placed)
                self._waiting.remove(row)
                continue
            cost = max(longest, len(row.ids)) * (len(chosen) + 1)
            if chosen and cost > self.config.max_batch_tokens:
                break
            slot = self._pin(row.request)
            if slot is None:
                continue  # every slot holds another adapter of this batch: next forward
            self._waiting.remove(row)
            chosen.append((row, slot))
            longest = max(longest, len(row.ids))
        return chosen

    def _pin(self, request: ClassifyRequest) -> int | None:
        """The row's slot (0: the base model); None when no slot is free in this batch."""
        adapter = request.adapter
        if adapter is None:
            return 0
        grant = self.slots.acquire(adapter.load_id)
        if grant is None:
            return None
        if grant.needs_write:
            try:
                self.lora.write_slot(grant.slot, adapter.weights.modules)
                weights = adapter.weights
                self.heads.write_slot(grant.slot, getattr(weights, "heads", {}), getattr(weights, "pooling", None))
            except Exception:
                log.exception("could not put adapter %s into a slot", adapter.name)
                self.slots.evict(grant.slot)  # half-written: never reuse it as this adapter
                request.fail("the replica could not place this adapter's weights; please retry")
                return None
        return grant.slot

    def _forward(self, rows: list[list[int]], slots: list[int]) -> torch.Tensor:
        """``[rows, widest head]`` float32 logits; each row's own head fills its first columns."""
        ids, mask = right_pad(rows, self.config.pad_token_id, self.device)
        kwargs = {"use_cache": False} if self._no_cache else {}
        self.lora.routing.set_rows(slots, self.device)
        try:
            with torch.inference_mode():
                out = self.model(input_ids=ids, attention_mask=mask, **kwargs)
        finally:
            self.lora.routing.clear()
        return out.logits.float()


def right_pad(rows: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Input ids and attention mask ``[rows, longest]``. Padding on the right keeps every real
    token at its own position, so no position ids are needed and results match unpadded runs."""
    longest = max(len(r) for r in rows)
    ids = torch.full((len(rows), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), longest), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids.to(device), mask.to(device)
