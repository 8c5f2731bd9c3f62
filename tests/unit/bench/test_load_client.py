"""The benchmark's streaming client reads events however the bytes arrive (one split across two
reads, several in one), counts tokens from the usage chunk, and reports errors, against a real
HTTP server that writes a scripted stream."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator

import pytest
from aiohttp import web

from bench.load import run_streaming_load
from tests.integration.harness import free_port


def _event(payload: object) -> bytes:
    return f"data: {json.dumps(payload)}\n\n".encode()


def _chunk(text: str, reason: str | None = None) -> dict[str, object]:
    return {"choices": [{"index": 0, "text": text, "finish_reason": reason}]}


# Each item is one write, flushed before the next: the first event is split across two writes,
# the next three come in one.
SCRIPTED = [
    _event(_chunk("He"))[:9],
    _event(_chunk("He"))[9:],
    _event(_chunk("llo")) + _event(_chunk("")) + _event(_chunk(" world", "length")),
    _event({"choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 3}}) + b"data: [DONE]\n\n",
]


async def _completions(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    if body["model"] == "missing":
        return web.json_response({"error": {"message": "no such model"}}, status=404)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    if body["model"] == "failing":
        await response.write(_event(_chunk("a")) + _event({"error": {"message": "engine failed"}}))
        return response
    for piece in SCRIPTED:
        await response.write(piece)
        await asyncio.sleep(0.01)  # each write its own read on the client's side
    return response


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    port = free_port()
    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_post("/v1/completions", _completions)
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}"
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)


def test_events_are_read_however_their_bytes_arrive(server_url: str) -> None:
    result = run_streaming_load(server_url, [{"model": "m"}] * 3, concurrency=2)
    assert not result.abandoned and len(result.records) == 3
    for record in result.records:
        assert record.error is None
        assert record.completion_tokens == 3 and record.tokens_from_usage
        assert record.finish_reason == "length"
        # Chunks that carry text, timed as they came: the empty one is not a token's arrival.
        assert len(record.chunk_times) == 3
        assert record.sent < record.chunk_times[0] <= record.chunk_times[-1] <= record.done


def test_errors_are_reported(server_url: str) -> None:
    result = run_streaming_load(server_url, [{"model": "missing"}, {"model": "failing"}], concurrency=1)
    refused, failed = result.records
    assert refused.error is not None and refused.error.startswith("HTTP 404") and "no such model" in refused.error
    assert failed.error is not None and "engine failed" in failed.error


def test_a_stop_check_abandons_the_load(server_url: str) -> None:
    result = run_streaming_load(server_url, [{"model": "m"}] * 5, concurrency=1, stop=lambda: True)
    assert result.abandoned and result.records == []
