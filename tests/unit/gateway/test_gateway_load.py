"""The gateway's load meter sees each call arrive once and leave flight however it ends: answered,
retried on another replica, refused, cut short mid-stream, or left by its client before the first
event. Stand-in replicas as in test_failover.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest

from enginehouse.gateway.routing import Target
from enginehouse.gateway.service import Gateway
from tests.unit.gateway.test_failover import ENDPOINT, Call, Replicas, _call, _client_request, run


def _settled(gateway: Gateway) -> tuple[int, float]:
    """(calls in flight now, calls arrived) for the stand-in engine."""
    sample = gateway.load.sample("engine-1")
    return sample.in_flight, round(sample.qps * sample.window_s, 6)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("replicas", [("ok",), ("dead", "ok"), ("dies", "ok"), ("refuses", "ok"),
                                      ("bad", "ok"), ("dies-mid-stream",), ("dies", "refuses", "ok")])
def test_every_call_leaves_flight_and_arrives_once(replicas: tuple[str, ...], stream: bool) -> None:
    async def scenario(gateway: Gateway, _: Replicas, route: Callable[..., Target]) -> tuple[int, float]:
        route(*replicas)
        for _ in range(2):
            await _call(gateway, stream)
        return _settled(gateway)

    assert run(scenario) == (0, 2)


def test_a_stream_is_in_flight_until_its_client_has_it_all() -> None:
    async def scenario(gateway: Gateway, _: Replicas, route: Callable[..., Target]) -> None:
        route("ok")
        raw = json.dumps({"model": "m", "stream": True}).encode()
        response = await gateway.serve(_client_request(), "org-1", ENDPOINT, raw, Call)
        assert gateway.load.sample("engine-1").in_flight == 1  # answered, not yet relayed
        await _drain(response)
        assert _settled(gateway) == (0, 1)

    run(scenario)


def test_a_stream_whose_client_leaves_before_the_first_event_leaves_flight() -> None:
    async def scenario(gateway: Gateway, _: Replicas, route: Callable[..., Target]) -> None:
        route("ok")
        raw = json.dumps({"model": "m", "stream": True}).encode()
        response = await gateway.serve(_client_request(), "org-1", ENDPOINT, raw, Call)

        async def gone() -> dict[str, Any]:
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            await asyncio.sleep(0)

        await response({"type": "http", "method": "POST", "path": ENDPOINT, "headers": []}, gone, send)
        assert _settled(gateway) == (0, 1)

    run(scenario)


async def _drain(response: Any) -> None:
    async for _ in response.body_iterator:
        pass
    response._on_close()  # what the server does once the body is sent (see ClosingStreamingResponse)
