"""A small time-bounded cache for the gateway's hot path.

Resolving an API key and a ``model`` name each cost a database round trip in a worker thread;
with a cache, a steady stream of calls pays that once per ``ttl_s``. The price is staleness
bounded by the TTL: a revoked key or a removed deployment may still resolve for that long (a
replica then answers for itself, e.g. 404 for an unloaded adapter).
"""

from __future__ import annotations

import time
from typing import Generic, Hashable, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TTLCache(Generic[K, V]):
    def __init__(self, ttl_s: float, max_entries: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: dict[K, tuple[float, V]] = {}

    def get(self, key: K) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if time.monotonic() >= expires:
            self._entries.pop(key, None)
            return None
        return value

    def put(self, key: K, value: V) -> None:
        if len(self._entries) >= self.max_entries:
            self._entries.clear()  # crude, but bounded; entries are cheap to rebuild
        self._entries[key] = (time.monotonic() + self.ttl_s, value)

    def discard(self, key: K) -> None:
        self._entries.pop(key, None)

    def clear(self) -> None:
        self._entries.clear()
