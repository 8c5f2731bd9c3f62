"""What the Ray provider does the same way for its replicas' actors and its training jobs':
find again the named actors a previous server left in the namespace, and ask many actors at once
without letting a busy one hold up the rest."""

from __future__ import annotations

import logging
from typing import Any, TypeVar

from enginehouse.core.deadline import first_line

log = logging.getLogger(__name__)

T = TypeVar("T")
# The answer of an actor that died (killed, or its node lost) instead of answering.
GONE = object()
GONE_REASON = "its Ray actor is gone (killed, or its node was lost)"
# How long the answers of the actors asked in one listing are waited for; one that has not
# answered by then (busy starting) counts as running: its health check (or next poll) judges it.
POLL_TIMEOUT_S = 5.0


def adopt_actors(ray: Any, prefix: str, timeout_s: float) -> list[tuple[Any, dict[str, Any]]]:
    """(handle, its ``describe()`` answer) of each live actor of the namespace named ``prefix…``;
    one that cannot be reached is left out, saying so."""
    found = []
    for name in ray.util.list_named_actors():
        if not isinstance(name, str) or not name.startswith(prefix):
            continue
        try:
            handle = ray.get_actor(name)
            found.append((handle, ray.get(handle.describe.remote(), timeout=timeout_s)))
        except (ValueError, ray.exceptions.RayError) as exc:
            log.warning("cannot adopt Ray actor %s: %s", name, first_line(exc))
    return found


def answers(ray: Any, calls: dict[Any, T], timeout_s: float) -> list[tuple[T, Any]]:
    """(entry, answer) for each call (an actor method's reference → what it was asked of) answered
    within ``timeout_s``; the answer is ``GONE`` where the actor died. The late are left out."""
    answered, _late = ray.wait(list(calls), num_returns=len(calls), timeout=timeout_s) if calls else ([], [])
    found = []
    for reference in answered:
        try:
            found.append((calls[reference], ray.get(reference)))
        except ray.exceptions.RayError:
            found.append((calls[reference], GONE))
    return found
