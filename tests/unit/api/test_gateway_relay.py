"""The gateway's stream relay lets go of the replica's stream however the client leaves, even
before the first event is sent (when the response body is never iterated)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from enginehouse.gateway.service import _Relay, _relay_response
from enginehouse.observability.gateway import GatewayMetrics, RouteLabels


class SlowStream:
    """A stand-in replica: an SSE stream of one event every 20 ms, noting when its client left."""

    def __init__(self) -> None:
        self.client_left = asyncio.Event()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        try:
            for _ in range(500):
                await response.write(b"data: {}\n\n")
                await asyncio.sleep(0.02)
        except (ConnectionResetError, asyncio.CancelledError):
            self.client_left.set()
            raise
        return response


async def _relay_to(send: Any, stream: SlowStream) -> tuple[bool, aiohttp.ClientResponse, GatewayMetrics]:
    app = web.Application()
    app.router.add_post("/stream", stream.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    metrics = GatewayMetrics(CollectorRegistry())
    closed: list[bool] = []
    try:
        async with aiohttp.ClientSession() as session:
            upstream = await session.post(f"http://127.0.0.1:{port}/stream")
            relay = _Relay(upstream, lambda: closed.append(True), metrics.start(RouteLabels("o", "e", "d"), time.perf_counter(), "engine-e"))
            scope = {"type": "http", "method": "POST", "path": "/", "headers": [], "asgi": {"version": "3.0"}}

            async def receive() -> dict[str, Any]:
                await asyncio.sleep(3600)  # the client never says it left; its socket does
                return {"type": "http.disconnect"}

            with pytest.raises(OSError):
                await _relay_response(relay)(scope, receive, send)
            await asyncio.wait_for(stream.client_left.wait(), timeout=10)
            return closed == [True], upstream, metrics
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("fail_on", ["http.response.start", "http.response.body"])
def test_the_replica_stream_is_closed_when_the_client_is_gone(fail_on: str) -> None:
    async def send(message: dict[str, Any]) -> None:
        if message["type"] == fail_on:
            raise OSError("the client went away")

    stream = SlowStream()
    closed_once, upstream, metrics = asyncio.run(_relay_to(send, stream))
    assert closed_once
    assert upstream.closed
    assert stream.client_left.is_set()
    assert metrics.requests.labels("o", "e", "d", "200")._value.get() == 1
