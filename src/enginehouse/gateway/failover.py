"""When a call goes to a second replica: only when the first failed before the client got a byte.

A replica's own failure is retried once, on another ready replica of the same deployment: it
could not be reached, its connection broke before the answer was complete (the process died), it
answered ``REFUSED_STATUS`` (the address is no longer that replica's: what listens there now
refused its secret; see ``enginehouse.replicaauth.is_foreign_replica``). Inference has no side
effects, so sending the call again is safe. An answer a live replica gave on purpose (a 400 for
bad input, a 404 for an adapter it lacks, a 500) is the client's answer, never retried. Neither
is a timeout: a replica silent for the gateway's whole timeout is most likely still working on a
long generation, and a second try would take as long again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Iterable

import aiohttp
from starlette.responses import Response

from enginehouse.errors import EnginehouseError
from enginehouse.observability.gateway import RequestTimer


class ReplicaFailed(Exception):
    """The replica failed before the client was sent anything, so the call may go elsewhere.
    ``answer`` is what the client gets when it cannot: the replica's own 503, or ours.
    ``replica_gone`` tells a replica that could not be reached from one that refused the call."""

    def __init__(self, answer: Response | EnginehouseError, replica_gone: bool) -> None:
        super().__init__(answer.message if isinstance(answer, EnginehouseError) else f"answered {answer.status_code}")
        self.answer = answer
        self.replica_gone = replica_gone

    def give_up(self, timer: RequestTimer) -> Response:
        """The answer as the client's final one (raised, when it is an error of ours)."""
        if isinstance(self.answer, EnginehouseError):
            raise self.answer
        timer.finish(self.answer.status_code)
        return self.answer


def is_replica_failure(exc: BaseException) -> bool:
    """True for a broken or refused connection; a connection never made counts even when it
    timed out (nothing was sent), a silent one does not (see above)."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return True
    return isinstance(exc, aiohttp.ClientError) and not isinstance(exc, asyncio.TimeoutError)


def is_replica_refusal(status: int) -> bool:
    """A replica's 503 says it cannot serve now (it is stopping, starting or full), not that the
    call is wrong: another replica may well take it."""
    return status == 503


def untried(replica_ids: Iterable[str], tried: Collection[str]) -> list[str]:
    """The replicas a call may still go to, in a stable order for the balancer."""
    return sorted(r for r in replica_ids if r not in tried)
