"""Which ready replica takes the next request: a pure policy over in-flight counts."""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Sequence


class LeastInFlight:
    """Fewest requests in flight wins; ties go round-robin so idle replicas share the load."""

    def __init__(self) -> None:
        self._in_flight: dict[str, int] = defaultdict(int)
        self._ticket = itertools.count()

    def choose(self, replica_ids: Sequence[str]) -> str:
        if not replica_ids:
            raise ValueError("no replica to choose from")
        fewest = min(self._in_flight[r] for r in replica_ids)
        candidates = [r for r in replica_ids if self._in_flight[r] == fewest]
        return candidates[next(self._ticket) % len(candidates)]

    def started(self, replica_id: str) -> None:
        self._in_flight[replica_id] += 1

    def finished(self, replica_id: str) -> None:
        self._in_flight[replica_id] = max(0, self._in_flight[replica_id] - 1)

    def snapshot(self) -> dict[str, int]:
        """Safe from another thread (the reconciler's): the items are copied in one C call,
        under the interpreter lock, before they are filtered."""
        return {k: v for k, v in list(self._in_flight.items()) if v}
