"""A short history of each engine's traffic, for the dashboard's chart: calls and their latency
in fixed time buckets over the last half hour, kept in memory by the gateway (Prometheus has the
long history; this is what a page can draw without one)."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

BUCKET_S = 10
WINDOW_S = 30 * 60


@dataclass
class Bucket:
    start: int  # unix seconds, a multiple of BUCKET_S
    calls: int = 0
    errors: int = 0  # answered with a status of 500 or more
    latency_s: float = 0.0  # summed over the calls


@dataclass(frozen=True)
class TrafficPoint:
    start: int
    calls: int
    calls_per_s: float
    mean_latency_ms: float | None  # None where no call ended in the bucket
    errors: int


class TrafficHistory:
    def __init__(self, bucket_s: int = BUCKET_S, window_s: int = WINDOW_S) -> None:
        self.bucket_s = bucket_s
        self.window_s = window_s
        self.buckets_kept = window_s // bucket_s
        self._engines: dict[str, deque[Bucket]] = {}
        self._lock = threading.Lock()  # recorded on the event loop, read by page handlers in threads

    def record(self, engine_id: str, code: int, latency_s: float, now: float | None = None) -> None:
        start = self._bucket_start(time.time() if now is None else now)
        with self._lock:
            buckets = self._engines.setdefault(engine_id, deque(maxlen=self.buckets_kept))
            if not buckets or buckets[-1].start != start:
                buckets.append(Bucket(start))
            bucket = buckets[-1]
            bucket.calls += 1
            bucket.errors += code >= 500
            bucket.latency_s += latency_s

    def series(self, engine_id: str, now: float | None = None) -> list[TrafficPoint]:
        """Every bucket of the window, oldest first, those without calls included (as zero)."""
        last = self._bucket_start(time.time() if now is None else now)
        with self._lock:
            recorded = {b.start: Bucket(b.start, b.calls, b.errors, b.latency_s)
                        for b in self._engines.get(engine_id, ())}
        points = []
        for index in range(self.buckets_kept - 1, -1, -1):
            start = last - index * self.bucket_s
            bucket = recorded.get(start, Bucket(start))
            points.append(TrafficPoint(
                start, bucket.calls, bucket.calls / self.bucket_s,
                1000 * bucket.latency_s / bucket.calls if bucket.calls else None, bucket.errors))
        return points

    def _bucket_start(self, moment: float) -> int:
        return int(moment // self.bucket_s) * self.bucket_s
