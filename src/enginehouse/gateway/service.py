"""Serving a client call: validate, resolve, wake if needed, forward to a replica, stream back."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from functools import partial
from typing import TypeVar

import aiohttp
from prometheus_client import CollectorRegistry
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from enginehouse.db.models import OrganizationModel
from enginehouse.disconnect import CLIENT_CLOSED_REQUEST, ClientLeft, ClosingStreamingResponse, unless_client_leaves
from enginehouse.db.session import Database
from enginehouse.errors import BadRequestError, EnginehouseError, ServiceUnavailableError
from enginehouse.gateway.balancer import LeastInFlight
from enginehouse.gateway.cache import TTLCache
from enginehouse.gateway.failover import ReplicaFailed, is_replica_failure, is_replica_refusal, untried
from enginehouse.gateway.load import LoadMeter
from enginehouse.gateway.routing import Target, Waking, resolve
from enginehouse.observability.gateway import GatewayMetrics, RequestTimer, RouteLabels
from enginehouse.protocol.openai import describe_validation_error
from enginehouse.replicaauth import is_foreign_replica
from enginehouse.services import engines as engine_service

log = logging.getLogger(__name__)

ModelT = TypeVar("ModelT", bound=BaseModel)
# (organization id, model name, endpoint): what a call is routed by.
RouteKey = tuple[str, str, str]
# One attempt at a call on one replica: (replica id, url, headers, body, timer) → the client's answer.
Forward = Callable[[str, str, Mapping[str, str], bytes, RequestTimer], Awaitable[Response]]

# Record an engine's last access at most this often (the inactive timeout needs no finer grain).
TOUCH_EVERY_S = 1.0
# How long a resolved route (deployment → ready replicas) is reused without asking the database.
ROUTE_TTL_S = 1.0
# How often a call whose replica died looks for its replacement in the database.
REPLACEMENT_POLL_S = 0.2


class Gateway:
    def __init__(
        self,
        database: Database,
        wake_wait_s: float,
        timeout_s: float,
        metrics: GatewayMetrics | None = None,
        load: LoadMeter | None = None,
    ) -> None:
        self.database = database
        self.wake_wait_s = wake_wait_s
        self.balancer = LeastInFlight()
        # Per-engine calls in flight and arriving, read by the autoscaler from another thread.
        self.load = load or LoadMeter()
        self.metrics = metrics or GatewayMetrics(CollectorRegistry())
        # No limit on a whole call (a long generation streams for as long as it takes); a replica
        # silent for ``timeout_s`` is given up on.
        self._timeout = aiohttp.ClientTimeout(total=None, connect=5.0, sock_read=timeout_s)
        self._client: aiohttp.ClientSession | None = None
        self._touched: dict[str, float] = {}
        self._background: set[asyncio.Task[None]] = set()
        # Organization names never change: looked up once each, for the metrics' labels.
        self._org_names: dict[str, str] = {}
        # Ready routes, reused for a moment (see gateway/cache.py for what that trades).
        self._routes: TTLCache[RouteKey, Target] = TTLCache(ROUTE_TTL_S)

    async def start(self) -> None:
        # aiohttp rather than httpx on this path: about a millisecond less CPU per forwarded call
        # here, which is most of what the gateway adds to a short request.
        connector = aiohttp.TCPConnector(limit=1000, limit_per_host=0, keepalive_timeout=30)
        self._client = aiohttp.ClientSession(connector=connector, timeout=self._timeout)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()

    @property
    def http(self) -> aiohttp.ClientSession:
        """The client the gateway talks to replicas with (the metrics endpoint borrows it)."""
        if self._client is None:
            raise RuntimeError("start() first")
        return self._client

    def in_flight_by_replica(self) -> dict[str, int]:
        return self.balancer.snapshot()

    async def serve(
        self, client: Request, org_id: str, endpoint: str, raw_body: bytes, request_model: type[BaseModel]
    ) -> Response:
        """Forward ``client``'s call (whose body is ``raw_body``) to a replica of its deployment."""
        started = time.perf_counter()
        body = parse_body(raw_body, request_model)
        model_name = str(getattr(body, "model"))  # every inference request model has one
        target = await self._target(org_id, model_name, endpoint)
        # Counted from here on: before, there is no deployment to name (or a made-up one).
        route = RouteLabels(self._org_names.get(org_id, org_id), target.engine_name, target.deployment_name)
        timer = self.metrics.start(route, started, target.engine_id)
        self.load.arrived(target.engine_id)  # once per call, however many replicas it is sent to
        try:
            await self._touch(target.engine_id)
            forward = partial(self._forward_stream if wants_stream(body) else self._forward, client, target.engine_id)
            return await self._send(client, forward, (org_id, model_name, endpoint), target, raw_body, timer)
        except ClientLeft:
            timer.finish(CLIENT_CLOSED_REQUEST)
            raise
        except EnginehouseError as exc:
            timer.finish(exc.status_code)
            raise
        except Exception:
            timer.finish(500)
            raise

    async def _send(
        self, client: Request, forward: Forward, key: RouteKey, target: Target, raw_body: bytes, timer: RequestTimer
    ) -> Response:
        """Forward to a ready replica and, when it fails before the client got a byte, once more to
        another (SPEC §4.2: a replica that dies is healed without the user, and so are its calls)."""
        endpoint = key[2]
        replica_id = self.balancer.choose(sorted(target.replicas))
        try:
            return await _attempt(forward, target, replica_id, endpoint, raw_body, timer)
        except ReplicaFailed as failed:
            self._forget_replica(key, replica_id)
            # A dead replica's replacement is worth waiting for; a live one that refused is not.
            wait_s = self.wake_wait_s if failed.replica_gone else 0.0
            retry = await unless_client_leaves(client, self._another_replica(key, target, replica_id, wait_s))
            if retry is None:
                return failed.give_up(timer)
            log.warning("replica %s failed a call to %s before answering (%s); sending it to %s",
                        replica_id, key[1], failed, retry[1])
            self.metrics.retried(timer.route)
        target, replica_id = retry
        try:
            return await _attempt(forward, target, replica_id, endpoint, raw_body, timer)
        except ReplicaFailed as failed:  # never a third try: the call itself may be what kills them
            self._forget_replica(key, replica_id)
            return failed.give_up(timer)

    async def _another_replica(
        self, key: RouteKey, target: Target, failed_id: str, wait_s: float
    ) -> tuple[Target, str] | None:
        """A ready replica of the deployment other than ``failed_id``: one the route already names,
        or else the first the database shows within ``wait_s`` (the failed one's replacement)."""
        deadline = time.monotonic() + wait_s
        while True:
            others = untried(target.replicas, {failed_id})
            if others:
                return target, self.balancer.choose(others)
            if time.monotonic() >= deadline:
                return None
            await asyncio.sleep(REPLACEMENT_POLL_S)
            try:
                route = await asyncio.to_thread(self._resolve, *key)
            except ServiceUnavailableError:  # no replica ready yet: the replacement is starting
                continue
            if isinstance(route, Target):
                target = route

    def _forget_replica(self, key: RouteKey, replica_id: str) -> None:
        """Stop handing out a replica that just failed, until the route is next read from the
        database (by then the reconciler has usually seen the replica die)."""
        cached = self._routes.get(key)
        if cached is None or replica_id not in cached.replicas:
            return
        rest = cached.without(replica_id)
        if rest.replicas:
            self._routes.put(key, rest)
        else:
            self._routes.discard(key)

    async def _target(self, org_id: str, model: str, endpoint: str) -> Target:
        cached = self._routes.get((org_id, model, endpoint))
        if cached is not None:
            return cached
        deadline = time.monotonic() + self.wake_wait_s
        woken = False
        while True:
            route = await asyncio.to_thread(self._resolve, org_id, model, endpoint)
            if isinstance(route, Target):
                self._routes.put((org_id, model, endpoint), route)
                return route
            if not woken:
                await asyncio.to_thread(self._wake, org_id, route)
                woken = True
            if time.monotonic() >= deadline:
                raise ServiceUnavailableError(
                    f"'{model}' is waking up (now {route.deployment_status}); try again shortly",
                    retry_after=10,
                    code="waking_up",
                )
            await asyncio.sleep(0.2)

    def _resolve(self, org_id: str, model: str, endpoint: str) -> Target | Waking:
        with self.database.session() as session:
            if org_id not in self._org_names:
                organization = session.get(OrganizationModel, org_id)
                self._org_names[org_id] = organization.name if organization else org_id
            return resolve(session, org_id, model, endpoint)

    def _wake(self, org_id: str, route: Waking) -> None:
        with self.database.session() as session:
            engine = engine_service.get_engine(session, org_id, route.engine_id)
            if engine.status == "Inactive":
                # Its commit tells the reconciler, which steps the engine at once.
                engine_service.reactivate_engine(session, org_id, engine.id, "inference request")

    async def _touch(self, engine_id: str) -> None:
        now = time.monotonic()
        if now - self._touched.get(engine_id, 0.0) < TOUCH_EVERY_S:
            return
        self._touched[engine_id] = now
        # Off the request's path: the write is bookkeeping for the inactive timeout.
        task = asyncio.create_task(asyncio.to_thread(self._write_touch, engine_id))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _write_touch(self, engine_id: str) -> None:
        with self.database.session() as session:
            engine_service.touch_engine(session, engine_id)

    def _attempt_started(self, engine_id: str, replica_id: str) -> None:
        self.balancer.started(replica_id)
        self.load.started(engine_id)

    def _attempt_finished(self, engine_id: str, replica_id: str) -> None:
        self.balancer.finished(replica_id)
        self.load.finished(engine_id)

    async def _forward(
        self, client: Request, engine_id: str, replica_id: str, url: str, headers: Mapping[str, str],
        raw_body: bytes, timer: RequestTimer,
    ) -> Response:
        session = self.http

        async def call() -> tuple[bytes, int, str, dict[str, str]]:
            async with session.post(url, data=raw_body, headers=headers) as upstream:
                content = await upstream.read()
                media_type = upstream.headers.get("content-type", "application/json")
                return content, upstream.status, media_type, passed_headers(upstream.headers)

        self._attempt_started(engine_id, replica_id)
        try:
            # A client leaving cancels the call, which closes the connection: the replica stops too.
            content, status, media_type, headers = await unless_client_leaves(client, call())
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise _replica_error(exc) from None
        finally:
            self._attempt_finished(engine_id, replica_id)
        return _replica_answer(Response(content, status_code=status, media_type=media_type, headers=headers), timer)

    async def _forward_stream(
        self, client: Request, engine_id: str, replica_id: str, url: str, headers: Mapping[str, str],
        raw_body: bytes, timer: RequestTimer,
    ) -> Response:
        finished = partial(self._attempt_finished, engine_id, replica_id)
        self._attempt_started(engine_id, replica_id)
        try:
            upstream = await self.http.post(url, data=raw_body, headers=headers)
        except BaseException as exc:  # cancelled too: the attempt must not stay counted in flight
            finished()
            if isinstance(exc, (aiohttp.ClientError, asyncio.TimeoutError)):
                raise _replica_error(exc) from None
            raise
        if upstream.status != 200:
            try:
                content = await upstream.read()
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                raise _replica_error(exc) from None
            finally:
                upstream.release()
                finished()
            return _replica_answer(Response(content, status_code=upstream.status, media_type="application/json",
                                            headers=passed_headers(upstream.headers)), timer)
        # The client's answer starts with the replica's first event, not before: a replica that dies
        # until then can still be swapped for another without the client seeing it.
        try:
            first = await unless_client_leaves(client, _first_chunk(upstream))
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            upstream.close()
            finished()
            raise _replica_error(exc) from None
        except BaseException:  # the client left first
            upstream.close()
            finished()
            raise
        return _relay_response(_Relay(upstream, finished, timer, first))


def _attempt(
    forward: Forward, target: Target, replica_id: str, endpoint: str, raw_body: bytes, timer: RequestTimer
) -> Awaitable[Response]:
    """Send the call to one replica. The headers are ours alone, never the client's: nothing a
    client sends (a forged secret header included) reaches a replica but the body."""
    return forward(replica_id, f"{target.replicas[replica_id].url}{endpoint}", target.forward_headers[replica_id],
                   raw_body, timer)


async def _first_chunk(upstream: aiohttp.ClientResponse) -> bytes:
    chunk = await upstream.content.readany()
    if not chunk:  # a 200 with no event at all: the replica went away before writing one
        raise aiohttp.ServerDisconnectedError("the replica closed the stream before its first event")
    return chunk


def _replica_answer(answer: Response, timer: RequestTimer) -> Response:
    """A replica's answer, the client's own unless it is a refusal another replica may not give."""
    if is_foreign_replica(answer.status_code):  # never the client's answer: it is not about its key
        raise ReplicaFailed(ServiceUnavailableError(
            "the replica could not be reached (its address answers to another secret); try again",
            retry_after=2, code="replica_unreachable"), replica_gone=True)
    if is_replica_refusal(answer.status_code):
        raise ReplicaFailed(answer, replica_gone=False)
    timer.finish(answer.status_code)
    return answer


class _Relay:
    """One replica stream passed through to a client. ``close`` runs exactly once, however the
    stream ends: to its end, the replica failing, or the client leaving (even before the first
    event, when the response's body is never iterated and a generator's ``finally`` never runs)."""

    def __init__(
        self, upstream: aiohttp.ClientResponse, on_close: Callable[[], None], timer: RequestTimer, first: bytes = b""
    ) -> None:
        self.upstream = upstream
        self._first = first  # already read from the replica (see ``Gateway._forward_stream``)
        self._on_close = on_close
        self._timer = timer
        self._complete = False
        self._closed = False

    async def chunks(self) -> AsyncIterator[bytes]:
        """The replica's events as they come; the call's latency runs to the stream's end."""
        try:
            if self._first:
                yield self._first
            async for chunk in self.upstream.content.iter_any():
                yield chunk
            self._complete = True
        except (aiohttp.ClientError, asyncio.TimeoutError):
            error = {"error": {"message": "the replica stopped answering", "type": "server_error",
                               "code": "replica_lost", "param": None}}
            yield f"data: {json.dumps(error)}\n\ndata: [DONE]\n\n".encode()
        finally:
            self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._complete:
            self.upstream.release()  # the connection goes back to the pool
        else:
            self.upstream.close()  # a stream cut short: the replica must see its client leave
        self._on_close()
        self._timer.finish(200)


def _relay_response(relay: _Relay) -> ClosingStreamingResponse:
    return ClosingStreamingResponse(relay.chunks(), relay.close, media_type="text/event-stream",
                                    headers={"Cache-Control": "no-cache"})


# A replica's answer headers the client is given too: a busy or loading replica's 503 says when
# to try again (SPEC §5), and a client that sees no Retry-After retries at once or not at all.
_PASSED_HEADERS = ("Retry-After",)


def passed_headers(upstream: Mapping[str, str]) -> dict[str, str]:
    return {name: upstream[name] for name in _PASSED_HEADERS if name in upstream}


def parse_body(raw_body: bytes, request_model: type[ModelT]) -> ModelT:
    """The JSON body, validated with the endpoint's request model (400 when it does not fit).
    The replica gets the client's bytes as they came; this is what the gateway decides on."""
    try:
        body = json.loads(raw_body)
    except (ValueError, UnicodeDecodeError):
        raise BadRequestError("the request body is not valid JSON", code="invalid_json") from None
    if not isinstance(body, dict):
        raise BadRequestError("the request body must be a JSON object", code="invalid_json")
    try:
        return request_model.model_validate(body)
    except ValidationError as exc:
        message, param = describe_validation_error(exc)
        raise BadRequestError(message, param=param) from None


def wants_stream(body: BaseModel) -> bool:
    """Relay an event stream only for a validated ``stream`` that is really ``true``: anything
    else the request model let through is answered in one piece."""
    return getattr(body, "stream", None) is True


def _replica_error(exc: Exception) -> Exception:
    """What a failed call to a replica raises: a ``ReplicaFailed`` another replica may take over,
    or (a replica silent for the whole timeout) the client's 503 at once."""
    unreachable = ServiceUnavailableError(
        f"the replica could not be reached ({type(exc).__name__}); try again", retry_after=2,
        code="replica_unreachable",
    )
    return ReplicaFailed(unreachable, replica_gone=True) if is_replica_failure(exc) else unreachable
