"""A call whose replica fails before the client got a byte goes once to another replica; an answer
a live replica gave on purpose, or a stream already under way, is the client's.

The replicas are small aiohttp servers standing in for real ones (each a path prefix on one
server); the route is put in the gateway's cache, so no database is asked unless a test says so.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from enginehouse.errors import ServiceUnavailableError
from enginehouse.gateway.cache import TTLCache
from enginehouse.gateway.failover import is_replica_failure, is_replica_refusal, untried
from enginehouse.gateway.routing import Target
from enginehouse.gateway.service import Gateway
from enginehouse.observability.gateway import GatewayMetrics
from enginehouse.replicaauth import REFUSED_STATUS, SECRET_HEADER, ReplicaAddress, is_foreign_replica

ENDPOINT = "/v1/completions"
KEY = ("org-1", "m", ENDPOINT)


class Call(BaseModel):
    model: str
    stream: bool = False


# -- the decision, with plain values ---------------------------------------------------------------

def test_a_broken_or_refused_connection_is_the_replicas_failure() -> None:
    for failure in (aiohttp.ServerDisconnectedError(), aiohttp.ClientOSError(104, "reset"),
                    aiohttp.ClientPayloadError("cut short"), aiohttp.ConnectionTimeoutError()):
        assert is_replica_failure(failure), failure


def test_a_silent_replica_or_another_error_is_not() -> None:
    for other in (aiohttp.ServerTimeoutError(), aiohttp.SocketTimeoutError(), asyncio.TimeoutError(),
                  ValueError("a bug of ours")):
        assert not is_replica_failure(other), other


def test_only_a_503_is_a_refusal() -> None:
    assert is_replica_refusal(503)
    assert not any(is_replica_refusal(status) for status in (200, 400, 404, 409, 422, 500))


def test_only_the_secret_checks_status_is_a_foreign_replica() -> None:
    assert REFUSED_STATUS == 401 and is_foreign_replica(REFUSED_STATUS)
    assert not any(is_foreign_replica(status) for status in (200, 400, 403, 404, 500, 503))


def test_a_call_never_goes_back_to_a_replica_it_tried() -> None:
    assert untried({"b": "u", "a": "u", "c": "u"}, {"b"}) == ["a", "c"]
    assert untried({"a": "u"}, {"a"}) == []


def test_a_route_less_one_replica() -> None:
    a, b = ReplicaAddress("http://a", "sa"), ReplicaAddress("http://b", "sb")
    target = Target("dp-1", "m", "engine-1", {"a": a, "b": b})
    assert target.without("a").replicas == {"b": b}
    assert target.replicas == {"a": a, "b": b}  # the cached route is not changed
    # A forwarded call's headers are made with the route, not on every call.
    assert target.forward_headers == {"a": {"content-type": "application/json", SECRET_HEADER: "sa"},
                                      "b": {"content-type": "application/json", SECRET_HEADER: "sb"}}
    assert target.without("a").forward_headers == {"b": target.forward_headers["b"]}


def test_a_cache_entry_can_be_dropped() -> None:
    cache: TTLCache[str, int] = TTLCache(60)
    cache.put("k", 1)
    cache.discard("k")
    cache.discard("never there")
    assert cache.get("k") is None


# -- the gateway against stand-in replicas ---------------------------------------------------------

class Replicas:
    """Stand-in replicas, each a behaviour under its own path; ``calls`` counts who was asked.
    Each answers only its secret, ``secret-<behaviour>``, as a real replica does (401 otherwise);
    ``secrets`` keeps the secret headers each call carried."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.secrets: list[list[str]] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        behaviour = request.match_info["behaviour"]
        self.calls[behaviour] = self.calls.get(behaviour, 0) + 1
        given = request.headers.getall(SECRET_HEADER, [])
        self.secrets.append(given)
        if given != [f"secret-{behaviour}"]:
            return web.json_response({"error": {"message": "wrong secret"}}, status=401)
        stream = (await request.json()).get("stream") is True
        if behaviour == "refuses":
            return web.json_response({"error": {"message": "shutting down"}}, status=503,
                                     headers={"Retry-After": "7"})
        if behaviour == "bad":
            return web.json_response({"error": {"message": "bad input"}}, status=400)
        if not stream:
            if behaviour == "dies":
                request.transport.close()  # type: ignore[union-attr]
            return web.json_response({"choices": [{"text": behaviour}]})
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        if behaviour != "dies":
            await response.write(b'data: {"text": "' + behaviour.encode() + b'"}\n\n')
        if behaviour in ("dies", "dies-mid-stream"):
            await asyncio.sleep(0.05)
            request.transport.close()  # type: ignore[union-attr]
            return response
        await response.write(b"data: [DONE]\n\n")
        return response


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _client_request(headers: list[tuple[bytes, bytes]] | None = None) -> Request:
    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()  # the client stays
        return {"type": "http.disconnect"}

    return Request({"type": "http", "method": "POST", "path": ENDPOINT, "headers": headers or []}, receive)


async def _body(response: Response) -> bytes:
    if hasattr(response, "body_iterator"):
        return b"".join([chunk async for chunk in response.body_iterator])  # type: ignore[misc]
    return bytes(response.body)


Scenario = Callable[[Gateway, Replicas, Callable[..., Target]], Awaitable[Any]]


def run(scenario: Scenario) -> Any:
    """Run ``scenario(gateway, replicas, route)`` with the stand-ins up; ``route(*behaviours)`` puts
    a route to those replicas (in that order of choice) in the gateway's cache."""
    async def main() -> Any:
        replicas = Replicas()
        app = web.Application()
        app.router.add_post("/{behaviour}" + ENDPOINT, replicas.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        base = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
        gateway = Gateway(database=None, wake_wait_s=1.0, timeout_s=10.0,  # type: ignore[arg-type]
                          metrics=GatewayMetrics(CollectorRegistry()))
        gateway._touched["engine-1"] = float("inf")  # no database to record the access in

        def route(*behaviours: str) -> Target:
            # An "impostor" holds the address of a replica whose port another one took: it
            # answers to another secret than the one the route has.
            addresses = {
                f"{i}-{b}": ReplicaAddress(f"http://127.0.0.1:{_unused_port()}" if b == "dead" else f"{base}/{b}",
                                           "secret-of-the-dead-one" if b == "impostor" else f"secret-{b}")
                for i, b in enumerate(behaviours)
            }
            target = Target("dp-1", "m", "engine-1", addresses, "engine")
            gateway._routes.put(KEY, target)
            return target

        await gateway.start()
        try:
            return await scenario(gateway, replicas, route)
        finally:
            await gateway.close()
            await runner.cleanup()

    return asyncio.run(main())


async def _call(
    gateway: Gateway, stream: bool = False, headers: list[tuple[bytes, bytes]] | None = None
) -> tuple[Response, bytes]:
    raw = json.dumps({"model": "m", "stream": stream}).encode()
    response = await gateway.serve(_client_request(headers), "org-1", ENDPOINT, raw, Call)
    return response, await _body(response)


def _retries(gateway: Gateway) -> float:
    return gateway.metrics.retries.labels("org-1", "engine", "m")._value.get()


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("first", ["dead", "dies", "refuses", "impostor"])
def test_a_call_whose_replica_fails_first_goes_to_another(first: str, stream: bool) -> None:
    async def scenario(gateway: Gateway, replicas: Replicas, route: Callable[..., Target]) -> None:
        route(first, "ok")
        response, body = await _call(gateway, stream)
        assert response.status_code == 200 and b"ok" in body
        if stream:
            assert body.endswith(b"data: [DONE]\n\n") and b"error" not in body
        assert replicas.calls.get("ok") == 1
        assert _retries(gateway) == 1
        # Later calls are not sent to the failed replica while the route is cached.
        assert list(gateway._routes.get(KEY).replicas) == ["1-ok"]  # type: ignore[union-attr]
        await _call(gateway, stream)
        assert replicas.calls.get(first, 0) <= 1 and replicas.calls["ok"] == 2

    run(scenario)


@pytest.mark.parametrize("stream", [False, True])
def test_an_answer_of_a_live_replica_is_not_retried(stream: bool) -> None:
    async def scenario(gateway: Gateway, replicas: Replicas, route: Callable[..., Target]) -> None:
        route("bad", "ok")
        response, body = await _call(gateway, stream)
        assert response.status_code == 400 and b"bad input" in body
        assert replicas.calls == {"bad": 1} and _retries(gateway) == 0

    run(scenario)


def test_a_stream_under_way_ends_with_an_error_event_and_is_not_retried() -> None:
    async def scenario(gateway: Gateway, replicas: Replicas, route: Callable[..., Target]) -> None:
        route("dies-mid-stream", "ok")
        response, body = await _call(gateway, stream=True)
        assert response.status_code == 200
        events = [e for e in body.decode().split("\n\n") if e]
        assert events[0] == 'data: {"text": "dies-mid-stream"}'
        error = json.loads(events[1].removeprefix("data: "))
        assert error["error"]["code"] == "replica_lost" and events[2:] == ["data: [DONE]"]
        assert "ok" not in replicas.calls and _retries(gateway) == 0

    run(scenario)


def test_nothing_is_retried_twice() -> None:
    async def scenario(gateway: Gateway, replicas: Replicas, route: Callable[..., Target]) -> None:
        route("dies", "refuses", "ok")
        gateway.balancer.started("2-ok")  # the busiest: the others are tried first
        response, _ = await _call(gateway)
        assert response.status_code == 503 and response.headers["Retry-After"] == "7"
        assert replicas.calls == {"dies": 1, "refuses": 1} and _retries(gateway) == 1

    run(scenario)


def test_a_lone_refusing_replica_answers_at_once() -> None:
    async def scenario(gateway: Gateway, replicas: Replicas, route: Callable[..., Target]) -> float:
        route("refuses")
        started = asyncio.get_running_loop().time()
        response, _ = await _call(gateway)
        assert response.status_code == 503 and response.headers["Retry-After"] == "7"
        return asyncio.get_running_loop().time() - started

    assert run(scenario) < 0.5  # not the 1 s wake bound: a live replica is not replaced


def test_a_lone_dead_replica_is_waited_for_until_its_replacement_is_ready() -> None:
    async def scenario(gateway: Gateway, replicas: Replicas, route: Callable[..., Target]) -> None:
        dead = route("dead")
        replaced = route("ok")
        reads: list[Target] = [dead, dead]  # the database still shows it ready for a moment

        def resolve(org_id: str, model: str, endpoint: str) -> Target:
            if not reads:
                return replaced
            return reads.pop()

        gateway._routes.put(KEY, dead)
        gateway._resolve = resolve  # type: ignore[method-assign]
        response, body = await _call(gateway)
        assert response.status_code == 200 and b"ok" in body and _retries(gateway) == 1

    run(scenario)


def test_a_lone_dead_replica_not_replaced_in_time_is_a_503() -> None:
    async def scenario(gateway: Gateway, replicas: Replicas, route: Callable[..., Target]) -> None:
        route("dead")

        def resolve(org_id: str, model: str, endpoint: str) -> Target:
            raise ServiceUnavailableError("no ready replica")

        gateway._resolve = resolve  # type: ignore[method-assign]
        with pytest.raises(ServiceUnavailableError) as unreachable:
            await _call(gateway)
        assert unreachable.value.code == "replica_unreachable"

    run(scenario)


@pytest.mark.parametrize("stream", [False, True])
def test_every_call_carries_its_replicas_secret_and_never_the_clients(stream: bool) -> None:
    async def scenario(gateway: Gateway, replicas: Replicas, route: Callable[..., Target]) -> None:
        route("ok")
        forged = [(SECRET_HEADER.lower().encode(), b"forged"), (b"x-other", b"1")]
        response, body = await _call(gateway, stream, headers=forged)
        assert response.status_code == 200 and b"ok" in body
        assert replicas.secrets == [["secret-ok"]]

    run(scenario)


@pytest.mark.parametrize("stream", [False, True])
def test_a_lone_impostor_is_a_503_never_its_401(stream: bool) -> None:
    async def scenario(gateway: Gateway, replicas: Replicas, route: Callable[..., Target]) -> None:
        route("impostor")

        def resolve(org_id: str, model: str, endpoint: str) -> Target:
            raise ServiceUnavailableError("no ready replica")

        gateway._resolve = resolve  # type: ignore[method-assign]
        with pytest.raises(ServiceUnavailableError) as refused:
            await _call(gateway, stream)
        assert refused.value.code == "replica_unreachable"

    run(scenario)
