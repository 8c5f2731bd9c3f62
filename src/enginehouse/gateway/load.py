"""How busy each engine is, as the gateway sees it: its calls in flight and arriving.

The gateway records every call on its event loop; the reconciler, in a thread of its own, reads a
``LoadSample`` now and then to size the engine (reconciler/autoscaler.py). Recording costs O(1)
and allocates nothing: each engine keeps a fixed ring of per-bucket totals, the time integral of
its in-flight level and its arrivals, so its memory stays the same however busy it is.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

# The span a sample averages over: long enough that a burst of a few seconds does not read as
# lasting load, short enough that a real rise shows within the default 10 s upscale delay.
WINDOW_S = 30.0
# The grain of the window: a sample covers the last WINDOW_S seconds to within one bucket.
BUCKET_S = 1.0
# The bucket number a ring slot holds before its first use: older than any window.
_UNUSED = -(2**62)


@dataclass(frozen=True)
class LoadSample:
    """One engine's load at one moment (zeros for an engine that never had a call)."""

    in_flight: int  # calls in flight now, on all its replicas together
    average_in_flight: float  # the in-flight level averaged over the window's time
    qps: float  # calls arrived per second over the window
    window_s: float  # the span the two averages cover, ending now


class _EngineLoad:
    """One engine's in-flight level and, per bucket of the window, the level's integral over time
    (in call-seconds) and the calls that arrived."""

    __slots__ = ("in_flight", "_since", "_bucket_s", "_call_seconds", "_arrivals", "_bucket_of")

    def __init__(self, buckets: int, bucket_s: float, now: float) -> None:
        self.in_flight = 0
        self._since = now  # the level is accounted for up to here
        self._bucket_s = bucket_s
        self._call_seconds = [0.0] * buckets
        self._arrivals = [0] * buckets
        self._bucket_of = [_UNUSED] * buckets  # which bucket each slot holds now

    def advance(self, now: float) -> float:
        """Account the level held since the last change up to ``now`` (never backwards: another
        thread's clock reading may be a moment older); the time accounted up to."""
        if now <= self._since:
            return self._since
        if self.in_flight:
            last = self._bucket(now)
            # Buckets older than the ring would be overwritten at once: skip them.
            for number in range(max(self._bucket(self._since), last - len(self._bucket_of) + 1), last + 1):
                start = max(self._since, number * self._bucket_s)
                end = min(now, (number + 1) * self._bucket_s)
                self._call_seconds[self._slot(number)] += self.in_flight * (end - start)
        self._since = now
        return now

    def arrive(self) -> None:
        self._arrivals[self._slot(self._bucket(self._since))] += 1

    def sample(self, now: float) -> LoadSample:
        now = self.advance(now)
        newest = self._bucket(now)
        oldest = newest - len(self._bucket_of) + 1
        # From the start of the oldest bucket: longer than WINDOW_S - BUCKET_S, at most WINDOW_S.
        covered = now - oldest * self._bucket_s
        in_window = [i for i, number in enumerate(self._bucket_of) if oldest <= number <= newest]
        call_seconds = sum(self._call_seconds[i] for i in in_window)
        arrivals = sum(self._arrivals[i] for i in in_window)
        return LoadSample(self.in_flight, call_seconds / covered, arrivals / covered, covered)

    def _bucket(self, moment: float) -> int:
        # Buckets are open at the start and closed at the end, (n·b, (n+1)·b], so that a window
        # ending exactly on a boundary still covers its full length.
        return math.ceil(moment / self._bucket_s) - 1

    def _slot(self, number: int) -> int:
        """The ring slot of bucket ``number``, emptied first if it still holds an older bucket."""
        slot = number % len(self._bucket_of)
        if self._bucket_of[slot] != number:
            self._bucket_of[slot] = number
            self._call_seconds[slot] = 0.0
            self._arrivals[slot] = 0
        return slot


class LoadMeter:
    """Per-engine load, recorded by the gateway and sampled from any thread.

    ``arrived`` counts a client's call once; ``started``/``finished`` bracket each attempt on a
    replica (a call retried on another replica is in flight once at a time). One lock guards it
    all: each hold is a few arithmetic steps, so the gateway's loop never waits long on the
    reconciler's reads.
    """

    def __init__(
        self, window_s: float = WINDOW_S, bucket_s: float = BUCKET_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if window_s <= 0 or bucket_s <= 0:
            raise ValueError("the window and its buckets must be longer than zero")
        self._buckets = max(1, math.ceil(window_s / bucket_s))
        self._bucket_s = bucket_s
        self._clock = clock
        self._lock = threading.Lock()
        self._engines: dict[str, _EngineLoad] = {}

    @property
    def clock(self) -> Callable[[], float]:
        """The clock the meter records with; a sample's ``now`` should come from it too."""
        return self._clock

    def arrived(self, engine_id: str) -> None:
        with self._lock:
            load = self._engine(engine_id)
            load.advance(self._clock())
            load.arrive()

    def started(self, engine_id: str) -> None:
        with self._lock:
            load = self._engine(engine_id)
            load.advance(self._clock())
            load.in_flight += 1

    def finished(self, engine_id: str) -> None:
        with self._lock:
            load = self._engine(engine_id)
            load.advance(self._clock())
            load.in_flight = max(0, load.in_flight - 1)

    def sample(self, engine_id: str, now: float | None = None) -> LoadSample:
        """The engine's load at ``now`` (the meter's clock when None) over the window before it."""
        with self._lock:
            moment = self._clock() if now is None else now
            load = self._engines.get(engine_id)
            if load is None:
                return LoadSample(0, 0.0, 0.0, self._buckets * self._bucket_s)
            return load.sample(moment)

    def _engine(self, engine_id: str) -> _EngineLoad:
        load = self._engines.get(engine_id)
        if load is None:
            load = self._engines[engine_id] = _EngineLoad(self._buckets, self._bucket_s, self._clock())
        return load
