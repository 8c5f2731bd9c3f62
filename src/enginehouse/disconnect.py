"""Stop work for a client that has gone away.

A stream's body may never be iterated at all: when sending its headers already fails, Starlette
gives up before asking for the first chunk, so a generator's ``finally`` never runs.
``ClosingStreamingResponse`` runs its ``on_close`` however the response ends.

A streamed answer notices its client leaving when a write fails. A non-streamed one writes
nothing until the end, so a generation whose caller timed out would otherwise hold its batch slot
to the last token. ``unless_client_leaves`` awaits the work while watching the connection, and
cancels the work when the client disconnects first. The gateway uses it too: cancelling its call
closes the connection to the replica, and the replica then cancels its own work.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Callable, Coroutine
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

T = TypeVar("T")

# nginx's "client closed request": logged and counted, never seen by the client.
CLIENT_CLOSED_REQUEST = 499


class ClientLeft(Exception):
    """The client disconnected before its answer was ready; the work was cancelled."""


async def unless_client_leaves(request: Request, work: Coroutine[Any, Any, T]) -> T:
    """``await work``, unless ``request``'s client disconnects first (``ClientLeft``). The body
    must have been read already: after it, the connection's next message is the disconnect."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if task.done():
        return task.result()
    task.cancel()
    try:
        await task  # let its cleanup (an abort, closing a connection) run before answering
    except (asyncio.CancelledError, Exception):
        pass
    raise ClientLeft()


def client_left_response() -> Response:
    return Response(status_code=CLIENT_CLOSED_REQUEST)


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


class ClosingStreamingResponse(StreamingResponse):
    """A stream whose ``on_close`` runs when the response ends, whichever way it ends."""

    def __init__(self, content: AsyncIterable[Any], on_close: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._on_close = on_close

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()
