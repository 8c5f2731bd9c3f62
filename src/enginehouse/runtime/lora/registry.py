"""The adapters a replica knows by name, and the host-memory tier of their weights.

Tiers, fastest first:
  1. GPU/serving slots (``SlotTable``, owned by the engine thread): at most ``max_loras``.
  2. Host memory (this registry's LRU): at most ``max_cpu_loras`` adapters' weights.
  3. Disk: an adapter pushed out of host memory stays registered and is re-read on its next
     request (its files were validated when it was loaded).

Thread-safe: HTTP handlers load and unload (in worker threads, the reads are slow) while the
engine thread only ever sees ``AdapterHandle`` objects that requests carry.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from enginehouse.errors import ModelNotFoundError
from enginehouse.runtime.lora.peft_format import AdapterLoadError, LoRAWeights

log = logging.getLogger(__name__)

AdapterStatus = Literal["loaded", "failed"]


@dataclass(frozen=True)
class AdapterHandle:
    """One loaded version of an adapter. ``load_id`` changes when a name is re-pointed to new
    files, so slots never confuse two versions of the same name."""

    name: str
    load_id: int
    weights: LoRAWeights


@dataclass(frozen=True)
class AdapterEntry:
    name: str
    path: str
    status: AdapterStatus
    reason: str | None = None
    load_id: int = 0
    rank: int = 0

    def describe(self) -> dict[str, str | None]:
        return {"status": self.status, "path": self.path, "reason": self.reason}


class AdapterRegistry:
    def __init__(self, reader: Callable[[str], LoRAWeights], max_cpu_loras: int) -> None:
        self._reader = reader
        self._max_cpu = max(1, max_cpu_loras)
        self._lock = threading.Lock()
        self._entries: dict[str, AdapterEntry] = {}
        self._host: OrderedDict[int, LoRAWeights] = OrderedDict()
        self._ids = itertools.count(1)

    def load(self, name: str, path: str) -> AdapterEntry:
        """Read, check and register an adapter. Blocking; raises ``AdapterLoadError``.

        Loading the same name and path again is a no-op. A failure leaves an adapter already
        loaded under this name in service; otherwise the name is recorded as failed.
        """
        with self._lock:
            current = self._entries.get(name)
        if current is not None and current.status == "loaded" and _same_path(current.path, path):
            return current
        try:
            weights = self._reader(path)
        except AdapterLoadError as exc:
            with self._lock:
                if name not in self._entries or self._entries[name].status == "failed":
                    self._entries[name] = AdapterEntry(name, path, "failed", str(exc))
            raise
        with self._lock:
            entry = AdapterEntry(name, path, "loaded", None, next(self._ids), weights.rank)
            previous = self._entries.get(name)
            self._entries[name] = entry
            if previous is not None:
                self._host.pop(previous.load_id, None)
            self._remember(entry.load_id, weights)
        log.info("adapter %s loaded from %s (rank %d, %d modules)", name, path, weights.rank, len(weights.modules))
        return entry

    def unload(self, name: str) -> bool:
        """Forget ``name``. Requests that already hold its handle finish on it."""
        with self._lock:
            entry = self._entries.pop(name, None)
            if entry is not None:
                self._host.pop(entry.load_id, None)
        if entry is not None:
            log.info("adapter %s unloaded", name)
        return entry is not None

    def get(self, name: str) -> AdapterEntry | None:
        with self._lock:
            return self._entries.get(name)

    def acquire_resident(self, entry: AdapterEntry) -> AdapterHandle | None:
        """The weights of a loaded entry if host memory holds them (never blocks on disk)."""
        with self._lock:
            weights = self._host.get(entry.load_id)
            if weights is None:
                return None
            self._host.move_to_end(entry.load_id)
            return AdapterHandle(entry.name, entry.load_id, weights)

    async def resolve(self, name: str) -> AdapterHandle:
        """The adapter a request names, for the event loop: 404 (``ModelNotFoundError``) when it
        is unknown or unusable. Usually a dictionary lookup; a read from disk, when host memory
        let the weights go, runs in a worker thread so the loop keeps serving the others."""
        entry = self.get(name)
        if entry is None:
            raise ModelNotFoundError(f"the model '{name}' does not exist on this replica", param="model")
        if entry.status != "loaded":
            raise ModelNotFoundError(f"the model '{name}' failed to load: {entry.reason}", param="model")
        try:
            return self.acquire_resident(entry) or await asyncio.to_thread(self.acquire, entry)
        except AdapterLoadError as exc:
            raise ModelNotFoundError(f"the model '{name}' is no longer loadable: {exc}", param="model") from None

    def acquire(self, entry: AdapterEntry) -> AdapterHandle:
        """The weights of a loaded entry, re-read from disk when host memory let them go.

        Blocking when it has to read; raises ``AdapterLoadError`` if the files went bad since.
        """
        handle = self.acquire_resident(entry)
        if handle is not None:
            return handle
        try:
            weights = self._reader(entry.path)
        except AdapterLoadError as exc:
            self._mark_failed(entry, f"could not re-read the adapter: {exc}")
            raise
        with self._lock:
            if self._entries.get(entry.name) == entry:
                self._remember(entry.load_id, weights)
        return AdapterHandle(entry.name, entry.load_id, weights)

    def snapshot(self) -> dict[str, dict[str, str | None]]:
        with self._lock:
            return {name: entry.describe() for name, entry in sorted(self._entries.items())}

    def host_resident(self) -> list[int]:
        with self._lock:
            return list(self._host)

    def loaded_names(self) -> list[str]:
        """The adapters answering requests now, by name."""
        with self._lock:
            return sorted(name for name, entry in self._entries.items() if entry.status == "loaded")

    def loaded_ids(self) -> set[int]:
        """The ``load_id`` of every adapter version in service (a slot may still hold an old one)."""
        with self._lock:
            return {entry.load_id for entry in self._entries.values() if entry.status == "loaded"}

    def _remember(self, load_id: int, weights: LoRAWeights) -> None:
        # Caller holds the lock. Least recently used weights leave host memory first; their
        # entries stay registered and are re-read on demand.
        self._host[load_id] = weights
        self._host.move_to_end(load_id)
        while len(self._host) > self._max_cpu:
            self._host.popitem(last=False)

    def _mark_failed(self, entry: AdapterEntry, reason: str) -> None:
        with self._lock:
            if self._entries.get(entry.name) == entry:
                self._entries[entry.name] = AdapterEntry(entry.name, entry.path, "failed", reason)


def _same_path(a: str, b: str) -> bool:
    return a == b or Path(a).resolve() == Path(b).resolve()
