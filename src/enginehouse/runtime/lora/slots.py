"""Which adapter version occupies each serving slot, and who pins it.

Pure bookkeeping, used by the engine thread only. A running sequence pins its adapter's slot
until it finishes, so weights never change under a sequence. When every slot is pinned, a request
for an adapter that is not resident has to wait (``acquire`` answers None) while requests for
resident adapters and the base model keep flowing.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass


@dataclass
class _Slot:
    load_id: int = 0  # 0: empty
    refs: int = 0
    last_used: int = 0


@dataclass(frozen=True)
class SlotGrant:
    slot: int
    # True when the slot was (re)assigned and the adapter's weights must be written into it.
    needs_write: bool


class SlotTable:
    def __init__(self, num_slots: int) -> None:
        # Index 0 is the base model's slot and is never handed out.
        self._slots = [_Slot() for _ in range(num_slots + 1)]
        self._clock = itertools.count(1)

    @property
    def capacity(self) -> int:
        return len(self._slots) - 1

    def acquire(self, load_id: int, count: int = 1) -> SlotGrant | None:
        """Pin ``count`` references to the adapter version ``load_id``; None if no slot is free."""
        resident = self.slot_of(load_id)
        if resident is not None:
            slot = self._slots[resident]
            slot.refs += count
            slot.last_used = next(self._clock)
            return SlotGrant(resident, needs_write=False)
        victim = self._pick_victim()
        if victim is None:
            return None
        slot = self._slots[victim]
        slot.load_id, slot.refs, slot.last_used = load_id, count, next(self._clock)
        return SlotGrant(victim, needs_write=True)

    def release(self, slot: int, count: int = 1) -> None:
        if slot == 0:
            return
        entry = self._slots[slot]
        entry.refs = max(0, entry.refs - count)

    def evict(self, slot: int) -> None:
        """Forget what ``slot`` holds, pinned or not (its weights could not be written)."""
        if slot:
            self._slots[slot] = _Slot()

    def slot_of(self, load_id: int) -> int | None:
        for index, slot in enumerate(self._slots):
            if index and slot.load_id == load_id:
                return index
        return None

    def resident(self) -> list[int]:
        """The adapter versions in the slots. Safe to call from another thread for a snapshot:
        it only reads, and a slot is replaced whole."""
        return [slot.load_id for slot in self._slots[1:] if slot.load_id]

    def pinned(self) -> int:
        return sum(1 for slot in self._slots[1:] if slot.refs > 0)

    def _pick_victim(self) -> int | None:
        # An empty slot first, then the least recently used unpinned one.
        free = [i for i, s in enumerate(self._slots) if i and s.refs == 0]
        if not free:
            return None
        empty = [i for i in free if self._slots[i].load_id == 0]
        if empty:
            return empty[0]
        return min(free, key=lambda i: self._slots[i].last_used)
