"""One thread that runs image forwards, one request at a time.

Image requests do not go through ``BatchWorker`` (which batches rows of token ids): one image is
preprocessed and run alone. A single thread keeps image forwards from competing with each other
for the CPU cores, and keeps decoding and the forward off the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

from enginehouse.errors import EnginehouseError, ServiceUnavailableError

T = TypeVar("T")


class ImageExecutor:
    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._inflight = 0  # only touched on the event loop

    def start(self) -> None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="enginehouse-image")

    def stop(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def counts(self) -> tuple[int, int]:
        """(image requests running, image requests queued): one thread runs one at a time."""
        inflight = self._inflight
        return min(inflight, 1), max(inflight - 1, 0)

    async def run(self, work: Callable[[], T]) -> T:
        """``work()`` on the image thread, under ``torch.inference_mode``."""
        if self._pool is None:
            raise ServiceUnavailableError("the replica is not serving (starting or shutting down)", retry_after=2)

        def call() -> T:
            with torch.inference_mode():
                return work()

        self._inflight += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, call)
        except EnginehouseError:
            raise
        except RuntimeError as exc:
            if "shutdown" in str(exc):
                raise ServiceUnavailableError("the replica is shutting down", retry_after=2) from None
            raise
        finally:
            self._inflight -= 1
