"""The client side: concurrent streaming ``/v1/completions`` calls, timed chunk by chunk, and
concurrent non-streamed calls (``/v1/embeddings``, ``/v1/classification``), timed whole.

Every latency the benchmark reports comes from these client-side timestamps, so the servers are
judged by what a caller sees (network, SSE framing and the gateway's relay included).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
import httpx

try:
    import uvloop
except ImportError:  # Windows: asyncio's own loop
    uvloop = None  # type: ignore[assignment]

T = TypeVar("T")

# Asked before each new request: True abandons the load (its requests in flight still finish).
StopCheck = Callable[[], bool]


@dataclass
class RequestRecord:
    """One request as the client saw it; times are ``time.perf_counter()`` seconds."""

    sent: float
    chunk_times: list[float] = field(default_factory=list)  # arrivals of chunks carrying text
    completion_tokens: int = 0
    tokens_from_usage: bool = False
    finish_reason: str | None = None
    error: str | None = None
    done: float = 0.0
    # Texts in the request (a non-streamed call's batch; a completion has one prompt).
    inputs: int = 1


@dataclass
class LoadResult:
    records: list[RequestRecord]
    wall_s: float
    # Stopped early by its StopCheck: not a measurement.
    abandoned: bool = False


# Sends one body with a client (aiohttp's for streams, httpx's for calls) and times it.
Send = Callable[[Any, dict[str, Any]], Awaitable[RequestRecord]]
_TIMEOUT_S, _CONNECT_TIMEOUT_S = 900.0, 30.0


def run_streaming_load(base_url: str, bodies: list[dict[str, Any]], concurrency: int,
                       headers: dict[str, str] | None = None, stop: StopCheck | None = None) -> LoadResult:
    """Send ``bodies`` (streaming completions) with ``concurrency`` callers, each taking the next
    body as soon as its previous answer ends (a closed loop, like a pool of users).

    The client shares the machine with the servers it measures, so it is kept light: aiohttp on
    uvloop, reading whatever bytes have come and splitting events itself (httpx's line iterator
    cost about three times as much CPU per token here, taken from the server being measured)."""
    async def load() -> LoadResult:
        connector = aiohttp.TCPConnector(limit=concurrency + 4)
        timeout = aiohttp.ClientTimeout(total=_TIMEOUT_S, connect=_CONNECT_TIMEOUT_S)
        async with aiohttp.ClientSession(base_url, headers=headers, connector=connector, timeout=timeout) as session:
            return await _closed_loop(session, bodies, concurrency, stop, stream_one)

    return _run(load())


def run_call_load(base_url: str, path: str, bodies: list[dict[str, Any]], concurrency: int,
                  headers: dict[str, str] | None = None, stop: StopCheck | None = None) -> LoadResult:
    """As ``run_streaming_load``, for non-streamed calls to ``path`` whose ``input`` is a text or
    a list of texts (``/v1/embeddings``, ``/v1/classification``)."""
    async def send(client: httpx.AsyncClient, body: dict[str, Any]) -> RequestRecord:
        return await call_one(client, path, body)

    async def load() -> LoadResult:
        limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4)
        timeout = httpx.Timeout(_TIMEOUT_S, connect=_CONNECT_TIMEOUT_S)
        async with httpx.AsyncClient(base_url=base_url, headers=headers or {}, limits=limits,
                                     timeout=timeout) as client:
            return await _closed_loop(client, bodies, concurrency, stop, send)

    return _run(load())


def prepared_call_load(base_url: str, path: str, warmup: list[dict[str, Any]], bodies: list[dict[str, Any]],
                       concurrency: int, headers: dict[str, str]) -> Callable[[StopCheck | None], LoadResult]:
    """Send ``warmup`` (not measured; a failed call fails the run), then return the measured load
    of ``bodies`` as a callable."""
    warmed = run_call_load(base_url, path, warmup, concurrency, headers)
    failed = [r.error for r in warmed.records if r.error]
    if failed:
        raise RuntimeError(f"warm-up of {path} failed: {failed[0]}")
    return lambda stop: run_call_load(base_url, path, bodies, concurrency, headers, stop)


def _run(load: Coroutine[Any, Any, LoadResult]) -> LoadResult:
    return uvloop.run(load) if uvloop is not None else asyncio.run(load)


async def _closed_loop(client: Any, bodies: list[dict[str, Any]], concurrency: int, stop: StopCheck | None,
                       send: Send) -> LoadResult:
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    records: list[RequestRecord] = []

    async def caller() -> None:
        while not queue.empty() and not (stop is not None and stop()):
            records.append(await send(client, queue.get_nowait()))

    start = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    wall_s = time.perf_counter() - start
    return LoadResult(records, wall_s, abandoned=not queue.empty())


async def stream_one(session: aiohttp.ClientSession, body: dict[str, Any]) -> RequestRecord:
    record = RequestRecord(sent=time.perf_counter())
    try:
        async with session.post("/v1/completions", json=body) as response:
            if response.status != 200:
                text = (await response.read()).decode(errors="replace")
                record.error = f"HTTP {response.status}: {text[:300]}"
            else:
                await _read_events(response, record)
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        record.error = f"{type(exc).__name__}: {exc}"
    record.done = time.perf_counter()
    if not record.tokens_from_usage and record.error is None:
        # No usage in the stream: one chunk per token is the best estimate left.
        record.completion_tokens = len(record.chunk_times)
    return record


async def _read_events(response: aiohttp.ClientResponse, record: RequestRecord) -> None:
    """Fold the stream's events into ``record`` as their bytes arrive (several may come at once:
    each is timed at the arrival of the read that completed it)."""
    pending = b""
    async for data in response.content.iter_any():
        now = time.perf_counter()
        *events, pending = (pending + data).split(b"\n\n")
        for event in events:
            for line in event.decode().splitlines():
                if _take_event(record, line, now):
                    return


async def call_one(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> RequestRecord:
    """One non-streamed call; an answer without one ``data`` item per input counts as an error."""
    texts = body["input"]
    record = RequestRecord(sent=time.perf_counter(), inputs=1 if isinstance(texts, str) else len(texts))
    try:
        response = await client.post(path, json=body)
        if response.status_code != 200:
            record.error = f"HTTP {response.status_code}: {response.text[:300]}"
        elif len(response.json().get("data") or []) != record.inputs:
            record.error = f"expected {record.inputs} results: {response.text[:300]}"
    except httpx.HTTPError as exc:
        record.error = f"{type(exc).__name__}: {exc}"
    record.done = time.perf_counter()
    return record


def _take_event(record: RequestRecord, line: str, now: float) -> bool:
    """Fold one SSE line into ``record``; True at the end of the stream."""
    if not line.startswith("data:"):
        return False
    payload = line[5:].strip()
    if payload == "[DONE]":
        return True
    event = json.loads(payload)
    if "error" in event:
        record.error = str(event["error"])[:300]
        return True
    for choice in event.get("choices") or []:
        if choice.get("text"):
            record.chunk_times.append(now)
        if choice.get("finish_reason"):
            record.finish_reason = choice["finish_reason"]
    usage = event.get("usage")
    if usage:
        record.completion_tokens = int(usage.get("completion_tokens") or 0)
        record.tokens_from_usage = True
    return False


def one_at_a_time(items: list[T], serve: Callable[[T], list[RequestRecord]]
                  ) -> Callable[[StopCheck | None], LoadResult]:
    """An in-process load: ``serve`` each item in turn (one call, no concurrency), its records
    pooled; abandoned between items when the StopCheck says so."""
    def run(stop: StopCheck | None) -> LoadResult:
        records: list[RequestRecord] = []
        start = time.perf_counter()
        for item in items:
            if stop is not None and stop():
                return LoadResult(records, time.perf_counter() - start, abandoned=True)
            records += serve(item)
        return LoadResult(records, time.perf_counter() - start)

    return run


def time_plain_request(client: httpx.Client, body: dict[str, Any]) -> float:
    """Seconds for one non-streamed completion; raises on an error answer."""
    start = time.perf_counter()
    response = client.post("/v1/completions", json=body)
    elapsed = time.perf_counter() - start
    response.raise_for_status()
    return elapsed
