"""The single-model batch worker: concurrent requests share padded forwards, within bounds, and
one model version per forward. The model here records its calls instead of computing."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from enginehouse.errors import EnginehouseError
from enginehouse.runtime.single.batching import BatchWorker, pad
from enginehouse.runtime.single.chunking import plan_chunks


class RecordingModel:
    """Answers each row with (its length, the row's first id); remembers each forward's shape."""

    pad_token_id = 0
    device = torch.device("cpu")

    def __init__(self, fail_on: int | None = None, delay: threading.Event | None = None) -> None:
        self.calls: list[tuple[int, int]] = []
        self.fail_on = fail_on
        self.delay = delay

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[Any]:
        if self.delay is not None:
            self.delay.wait(5)
        self.calls.append(tuple(input_ids.shape))  # type: ignore[arg-type]
        if self.fail_on is not None and (input_ids == self.fail_on).any():
            raise RuntimeError("boom")
        lengths = attention_mask.sum(dim=1).tolist()
        return [(n, int(input_ids[i, 0])) for i, n in enumerate(lengths)]


@pytest.fixture
def worker() -> Iterator[BatchWorker]:
    worker = BatchWorker(max_batch_size=4, max_batch_tokens=64, collect_window_s=0.05)
    worker.start()
    yield worker
    worker.stop()


def test_pad_right_pads_and_masks() -> None:
    ids, mask = pad([[5, 6, 7], [8]], 0, torch.device("cpu"))
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]


def test_outputs_come_back_in_row_order(worker: BatchWorker) -> None:
    model = RecordingModel()
    rows = [[1], [2, 2, 2], [3, 3]]
    assert asyncio.run(worker.run(model, rows, "m")) == [(1, 1), (3, 2), (2, 3)]


def test_rows_run_sorted_by_length_in_chunks_that_pad_little(worker: BatchWorker) -> None:
    model = RecordingModel()
    lengths = [1, 5, 2, 4, 3, 6]
    outputs = asyncio.run(worker.run(model, [[n] * n for n in lengths], "m"))
    assert outputs == [(n, n) for n in lengths]
    assert model.calls == [(3, 6), (3, 3)]  # 6, 5, 4 then 3, 2, 1 (at most 4 rows a forward)


def test_plan_chunks_cuts_where_lengths_drop() -> None:
    lengths = [40, 39, 38, 12, 11, 10, 10, 3]
    assert plan_chunks(lengths, max_rows=32, max_tokens=10_000, overhead_tokens=16) == [3, 5]
    assert plan_chunks(lengths, max_rows=32, max_tokens=10_000, overhead_tokens=6) == [3, 4, 1]
    # A costly forward is worth more padding: one chunk.
    assert plan_chunks(lengths, max_rows=32, max_tokens=10_000, overhead_tokens=500) == [8]
    # Equal lengths: as few forwards as the row bound allows.
    assert plan_chunks([7] * 10, max_rows=4, max_tokens=10_000, overhead_tokens=1) == [4, 4, 2]


def test_plan_chunks_keeps_the_token_bound() -> None:
    assert plan_chunks([300, 20, 20, 20], max_rows=32, max_tokens=100, overhead_tokens=1000) == [1, 3]
    assert plan_chunks([], max_rows=4, max_tokens=100, overhead_tokens=1) == []


def test_concurrent_requests_share_forwards_within_the_bounds(worker: BatchWorker) -> None:
    gate = threading.Event()
    model = RecordingModel(delay=gate)

    async def scenario() -> list[list[Any]]:
        first = asyncio.ensure_future(worker.run(model, [[9]], "m"))  # occupies the worker
        await asyncio.sleep(0.05)
        rest = [asyncio.ensure_future(worker.run(model, [[i] * (i + 1)], "m")) for i in range(1, 7)]
        await asyncio.sleep(0.05)
        gate.set()
        return await asyncio.gather(first, *rest)

    results = asyncio.run(scenario())
    assert results[1:] == [[(i + 1, i)] for i in range(1, 7)]
    # The lone first request ran alone; the six queued behind it ran as 4 + 2 rows.
    assert model.calls == [(1, 1), (4, 5), (2, 7)]


def test_token_bound_splits_long_rows(worker: BatchWorker) -> None:
    model = RecordingModel()
    rows = [[1] * 30, [2] * 30, [3] * 30]  # 64 padded tokens per forward: two rows of 30 fit
    asyncio.run(worker.run(model, rows, "m"))
    assert model.calls == [(2, 30), (1, 30)]


def test_model_versions_never_share_a_forward(worker: BatchWorker) -> None:
    gate = threading.Event()
    old, new = RecordingModel(delay=gate), RecordingModel()

    async def scenario() -> None:
        blocker = asyncio.ensure_future(worker.run(old, [[1]], "m"))
        await asyncio.sleep(0.05)
        jobs = [worker.run(old, [[2]], "m"), worker.run(new, [[3]], "m"), worker.run(old, [[4]], "m")]
        futures = [asyncio.ensure_future(j) for j in jobs]
        await asyncio.sleep(0.05)
        gate.set()
        assert await asyncio.gather(*futures) == [[(1, 2)], [(1, 3)], [(1, 4)]]
        await blocker

    asyncio.run(scenario())
    assert old.calls == [(1, 1), (2, 1)] and new.calls == [(1, 1)]


def test_a_failing_forward_fails_only_its_requests(worker: BatchWorker) -> None:
    model = RecordingModel(fail_on=7)
    gate = threading.Event()
    blocker_model = RecordingModel(delay=gate)

    async def scenario() -> tuple[Any, Any]:
        blocker = asyncio.ensure_future(worker.run(blocker_model, [[1]], "m"))
        await asyncio.sleep(0.05)
        bad = asyncio.ensure_future(worker.run(model, [[7] * 40], "m"))  # alone: 40 + 40 > 64 tokens
        good = asyncio.ensure_future(worker.run(model, [[5] * 40], "m"))
        await asyncio.sleep(0.05)
        gate.set()
        await blocker
        return await asyncio.gather(bad, good, return_exceptions=True)

    bad, good = asyncio.run(scenario())
    assert isinstance(bad, EnginehouseError) and "failed" in bad.message
    assert good == [(40, 5)]
    assert asyncio.run(worker.run(model, [[5]], "m")) == [(1, 5)]


def test_a_request_cancelled_while_queued_is_skipped(worker: BatchWorker) -> None:
    gate = threading.Event()
    model = RecordingModel(delay=gate)

    async def scenario() -> None:
        blocker = asyncio.ensure_future(worker.run(model, [[1]], "m"))
        await asyncio.sleep(0.05)
        left = asyncio.ensure_future(worker.run(model, [[2, 2]], "m"))
        stays = asyncio.ensure_future(worker.run(model, [[3]], "m"))
        await asyncio.sleep(0.02)
        left.cancel()
        await asyncio.sleep(0)
        gate.set()
        await blocker
        assert await stays == [(1, 3)]

    asyncio.run(scenario())
    assert model.calls == [(1, 1), (1, 1)]


def test_stopping_fails_queued_jobs_and_refuses_new_ones() -> None:
    worker = BatchWorker(max_batch_size=4)
    gate = threading.Event()
    model = RecordingModel(delay=gate)
    worker.start()

    async def scenario() -> tuple[Any, Any]:
        running = asyncio.ensure_future(worker.run(model, [[1]], "m"))
        await asyncio.sleep(0.05)
        queued = asyncio.ensure_future(worker.run(model, [[2]], "m"))
        await asyncio.sleep(0.01)
        threading.Timer(0.05, gate.set).start()
        await asyncio.to_thread(worker.stop)  # waits for the running forward to end
        return await asyncio.gather(running, queued, return_exceptions=True)

    running, queued = asyncio.run(scenario())
    assert running == [(1, 1)]
    assert isinstance(queued, EnginehouseError) and queued.status_code == 503
    with pytest.raises(EnginehouseError) as refused:
        asyncio.run(worker.run(model, [[1]], "m"))
    assert refused.value.status_code == 503
    assert worker.counts() == (0, 0)
