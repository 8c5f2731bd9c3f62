"""One worker thread that batches the rows of concurrent requests into padded forwards.

A request becomes a ``Job``: the model version it resolved to and one row of token ids per input.
The worker takes what is queued, waits a short collect window for more when requests have been
arriving together (a lone client pays no wait), sorts the rows by length and cuts them into
forwards that waste little padding (``chunking.plan_chunks``; at most ``max_batch_size`` rows and
``max_batch_tokens`` padded tokens each). Each model returns one output per row; a job completes
when all its rows have. On a CPU, padding was the largest cost: random sentence lengths in one
padded forward cost ~40% more than sentence-transformers' length-sorted batches.

The threads signal each other about once per batch, not once per request: a request wakes the
worker only when it is idle (or when a batch has filled during the collect window), and a batch's
results reach the event loop in one call. On a CPU replica those wake-ups, not the bookkeeping,
were the cost of a request.

Rows of different model versions (a swap happened while requests were queued) never share a
forward: each job finishes on the model it resolved to.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from enginehouse.errors import EnginehouseError, ServiceUnavailableError
from enginehouse.runtime.metrics import STATUS_ABORTED, STATUS_ERROR, STATUS_OK, ReplicaMetrics, RequestRecord
from enginehouse.runtime.single.chunking import plan_chunks

log = logging.getLogger(__name__)

# How long the worker waits for more requests once it has some, when requests have been arriving
# together. Short next to one forward of a batch, long enough for a burst of clients to join it.
COLLECT_WINDOW_S = 0.004
# Padded tokens per forward: bounds activation memory when long inputs meet a large batch size.
MAX_BATCH_TOKENS = 16384
# The fixed cost of one forward, in padded tokens' worth of work (see ``chunking``). Measured for
# all-MiniLM-L6-v2 on 2 CPU cores: 24 to 48 did equally well, 8 or 128 clearly worse.
FORWARD_OVERHEAD_TOKENS = 32.0


class BatchModel(Protocol):
    """What the worker needs of a served model."""

    pad_token_id: int
    device: torch.device

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[Any]:
        """One output per row (runs under ``torch.inference_mode``)."""
        ...


@dataclass(eq=False)
class Job:
    model: BatchModel
    rows: list[list[int]]
    deployment: str  # the metrics' label
    future: asyncio.Future[list[Any]]  # of the event loop that submitted the job
    arrival: float = field(default_factory=time.monotonic)
    outputs: list[Any] = field(default_factory=list)
    error: EnginehouseError | None = None


class BatchWorker:
    def __init__(
        self,
        *,
        max_batch_size: int,
        max_batch_tokens: int = MAX_BATCH_TOKENS,
        collect_window_s: float = COLLECT_WINDOW_S,
        forward_overhead_tokens: float = FORWARD_OVERHEAD_TOKENS,
        metrics: ReplicaMetrics | None = None,
    ) -> None:
        self.max_batch_size = max_batch_size
        self.forward_overhead_tokens = forward_overhead_tokens
        self.max_batch_tokens = max_batch_tokens
        self.collect_window_s = collect_window_s
        self.metrics = metrics
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # guards the queue, the counts and the two events' states
        self._pending: deque[Job] = deque()
        self._work = threading.Event()  # set while jobs are queued
        self._full = threading.Event()  # set while a batch's worth of rows is queued
        self._stopping = False
        self._waiting_rows = 0
        self._running_rows = 0
        self._last_batch_jobs = 0

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="enginehouse-batch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is None:
            return
        with self._lock:
            self._stopping = True
            self._work.set()
            self._full.set()
            left = list(self._pending)
            self._pending.clear()
            self._waiting_rows = 0
        self._thread.join(timeout=30)
        self._thread = None
        _settle(left, ServiceUnavailableError("the replica is shutting down", retry_after=2))

    # -- requests ----------------------------------------------------------------------------

    async def run(self, model: BatchModel, rows: list[list[int]], deployment: str) -> list[Any]:
        """The model's outputs for ``rows``, in order. Cancelling the caller (the client left)
        drops the job if it has not started yet."""
        job = Job(model, rows, deployment, asyncio.get_running_loop().create_future())
        with self._lock:
            if self._thread is None or self._stopping:
                raise ServiceUnavailableError("the replica is not serving (starting or shutting down)",
                                              retry_after=2)
            self._pending.append(job)
            self._waiting_rows += len(rows)
            if not self._work.is_set():
                self._work.set()
            if self._waiting_rows >= self.max_batch_size and not self._full.is_set():
                self._full.set()
        return await job.future

    def counts(self) -> tuple[int, int]:
        """(rows in the forward running now, rows queued)."""
        with self._lock:
            return self._running_rows, self._waiting_rows

    # -- the worker thread ------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            self._work.wait()
            if self._stopping:
                return
            # Only wait when requests have been arriving together: a lone client gets no added
            # delay. A batch that fills meanwhile ends the wait.
            if self._last_batch_jobs > 1:
                self._full.wait(self.collect_window_s)
            jobs = self._take()
            if jobs:
                with torch.inference_mode():
                    self._run(jobs)

    def _take(self) -> list[Job]:
        """Whole jobs from the queue, up to a batch's worth of rows (at least one job)."""
        jobs: list[Job] = []
        rows = 0
        with self._lock:
            while self._pending and rows < self.max_batch_size:
                job = self._pending.popleft()
                jobs.append(job)
                rows += len(job.rows)
            self._waiting_rows -= rows
            if not self._pending:
                self._work.clear()
            if self._waiting_rows < self.max_batch_size:
                self._full.clear()
        self._last_batch_jobs = len(jobs)
        return jobs

    def _run(self, jobs: list[Job]) -> None:
        admitted = time.monotonic()
        # Reading cancelled() off the loop's thread may miss a cancellation racing with it; such
        # a job is computed for nothing and its result dropped when settled.
        live: list[Job] = []
        for job in jobs:
            if job.future.cancelled():
                self._record(job, STATUS_ABORTED, admitted=None)
            else:
                live.append(job)
        groups: dict[int, list[tuple[Job, int]]] = {}
        for job in live:
            job.outputs = [None] * len(job.rows)
            groups.setdefault(id(job.model), []).extend((job, i) for i in range(len(job.rows)))
        for items in groups.values():
            items.sort(key=lambda item: len(item[0].rows[item[1]]), reverse=True)
            for chunk in self._chunks(items):
                self._forward(chunk)
        _settle(live)
        for job in live:
            self._record(job, STATUS_OK if job.error is None else STATUS_ERROR, admitted)

    def _chunks(self, items: list[tuple[Job, int]]) -> Iterator[list[tuple[Job, int]]]:
        """The length-sorted rows cut into forwards that waste little padding (``plan_chunks``)."""
        lengths = [len(job.rows[i]) for job, i in items]
        start = 0
        for size in plan_chunks(lengths, max_rows=self.max_batch_size, max_tokens=self.max_batch_tokens,
                                overhead_tokens=self.forward_overhead_tokens):
            yield items[start: start + size]
            start += size

    def _forward(self, chunk: list[tuple[Job, int]]) -> None:
        pending = [(job, i) for job, i in chunk if job.error is None]
        if not pending:
            return
        model = pending[0][0].model
        rows = [job.rows[i] for job, i in pending]
        with self._lock:
            self._running_rows = len(rows)
        try:
            input_ids, attention_mask = pad(rows, model.pad_token_id, model.device)
            outputs = model.forward(input_ids, attention_mask)
        except Exception as exc:  # the model failing one batch fails its requests, not the replica
            log.exception("forward of %d rows failed", len(rows))
            error = EnginehouseError(f"the model failed on this request ({type(exc).__name__}); see the replica log")
            for job, _ in pending:
                job.error = error
            return
        finally:
            with self._lock:
                self._running_rows = 0
        for (job, i), output in zip(pending, outputs):
            job.outputs[i] = output

    def _record(self, job: Job, status: str, admitted: float | None) -> None:
        if self.metrics is None:
            return
        self.metrics.record(RequestRecord(
            deployment=job.deployment, status=status, prompt_tokens=sum(len(r) for r in job.rows),
            generation_tokens=0, arrival=job.arrival, finished=time.monotonic(), admitted=admitted,
        ))


def pad(rows: list[list[int]], pad_token_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and their attention mask."""
    width = max(len(row) for row in rows)
    # One tensor from nested lists: far cheaper than filling row by row for short rows.
    input_ids = torch.tensor([row + [pad_token_id] * (width - len(row)) for row in rows], dtype=torch.long)
    attention_mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in rows], dtype=torch.long)
    return input_ids.to(device), attention_mask.to(device)


def _settle(jobs: list[Job], error: EnginehouseError | None = None) -> None:
    """Hand the jobs' results (or ``error``) to their event loops: one call per loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[Job]] = {}
    for job in jobs:
        by_loop.setdefault(job.future.get_loop(), []).append(job)
    for loop, batch in by_loop.items():
        try:
            loop.call_soon_threadsafe(_resolve, batch, error)
        except RuntimeError:  # the loop has closed: nobody is waiting any more
            pass


def _resolve(jobs: list[Job], error: EnginehouseError | None) -> None:
    for job in jobs:
        if job.future.done():  # cancelled: the client left
            continue
        failure = error or job.error
        if failure is not None:
            job.future.set_exception(failure)
        else:
            job.future.set_result(job.outputs)
