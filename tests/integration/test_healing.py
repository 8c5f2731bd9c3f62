"""A replica killed under load fails no call: calls it had not answered go to the other replica,
the reconciler replaces it, and the engine stays Active throughout.

Only a stream that was already under way on the killed replica may end early, and then with the
error event and ``[DONE]``; every other call, streamed or not, is answered in full.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import openai
import pytest

from tests.integration.harness import ServerProcess, engine_status, replica_pid, wait_for
from tests.integration.test_textgen import create_engine
from tests.prometheus import Scrape

pytestmark = pytest.mark.integration

ENGINE = "hydra"
COMPLETION_TOKENS = 6
STREAM_TOKENS = 16
LOAD_AT_LEAST_S = 15.0
# ignore_eos: every answer has exactly max_tokens tokens, so a short answer is a broken one.
EXTRA = {"ignore_eos": True}


@dataclass
class Outcomes:
    """What the load saw, by kind; ``failures`` holds anything that should not have happened."""

    answered: int = 0
    streams_complete: int = 0
    streams_cut_short: int = 0
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str) -> None:
        with self.lock:
            if kind in ("answered", "streams_complete", "streams_cut_short"):
                setattr(self, kind, getattr(self, kind) + 1)
            else:
                self.failures.append(kind)


@pytest.fixture(scope="module")
def server(start_server) -> ServerProcess:  # type: ignore[no-untyped-def]
    return start_server()


def _ready_replicas(http: httpx.Client, engine_id: str) -> list[dict]:
    engine = engine_status(http, engine_id) or {"replicas": []}
    return [r for r in engine["replicas"] if r["status"] == "ready"]


def _complete(client: openai.OpenAI) -> str:
    try:
        reply = client.completions.create(model=ENGINE, prompt="the cat sat", max_tokens=COMPLETION_TOKENS,
                                          extra_body=EXTRA)
    except openai.APIError as exc:
        return f"completion failed: {exc!r}"
    if reply.usage is None or reply.usage.completion_tokens != COMPLETION_TOKENS or not reply.choices[0].text:
        return f"completion incomplete: {reply!r}"
    return "answered"


def _stream(http: httpx.Client) -> str:
    """One streamed chat, read as raw events: complete, cut short with the error event, or failed."""
    body = {"model": ENGINE, "messages": [{"role": "user", "content": "hi"}], "max_tokens": STREAM_TOKENS,
            "stream": True, "stream_options": {"include_usage": True}, **EXTRA}
    try:
        with http.stream("POST", "/v1/chat/completions", json=body) as response:
            if response.status_code != 200:
                return f"stream refused: {response.status_code} {response.read()!r}"
            events = [line[len("data: "):] for line in response.iter_lines() if line.startswith("data: ")]
    except httpx.HTTPError as exc:
        return f"stream broke: {exc!r}"
    if events[-1:] != ["[DONE]"]:
        return f"stream without [DONE]: {events[-3:]}"
    chunks = [json.loads(event) for event in events[:-1]]
    errors = [i for i, chunk in enumerate(chunks) if "error" in chunk]
    if not errors:
        usage = chunks[-1].get("usage") if chunks else None
        complete = usage is not None and usage["completion_tokens"] == STREAM_TOKENS
        return "streams_complete" if complete else f"stream short: {events[-3:]}"
    first_error = errors[0]
    code = chunks[first_error]["error"]["code"]
    if first_error > 0 and first_error == len(events) - 2 and code == "replica_lost":
        return "streams_cut_short"  # it was under way on the killed replica
    return f"stream failed before its first event: {events}"


def _keep_calling(call: Callable[[], str], outcomes: Outcomes, stop: threading.Event) -> None:
    while not stop.is_set():
        outcomes.add(call())


def _watch_status(http: httpx.Client, engine_id: str, seen: set[str], stop: threading.Event) -> None:
    while not stop.is_set():
        engine = engine_status(http, engine_id)
        seen.add(engine["status"] if engine else "gone")
        time.sleep(0.2)


def _retries(server: ServerProcess) -> float:
    scrape = Scrape.parse(httpx.get(f"{server.url}/metrics", timeout=30).text)
    return sum(value for _, value in scrape.matching("enginehouse_gateway_retries_total", engine=ENGINE))


def test_killing_a_replica_under_load_fails_no_call(server: ServerProcess, tiny_llama_dir: Path) -> None:
    http = server.client()
    engine = create_engine(http, ENGINE, tiny_llama_dir,
                           autoscaling={"min_replicas": 2, "max_replicas": 2, "metric": "concurrency"})
    wait_for(lambda: len(_ready_replicas(http, engine["id"])) == 2, timeout=120, what="two ready replicas")
    wait_for(lambda: (engine_status(http, engine["id"]) or {}).get("status") == "Active", timeout=30,
             what="the engine to be Active")

    outcomes, stop, statuses = Outcomes(), threading.Event(), set[str]()
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=server.api_key, max_retries=0, timeout=60)
    streamer = server.client()
    workers = [threading.Thread(target=_keep_calling, args=(lambda: _complete(client), outcomes, stop))
               for _ in range(2)]
    workers += [threading.Thread(target=_keep_calling, args=(lambda: _stream(streamer), outcomes, stop))
                for _ in range(2)]
    workers.append(threading.Thread(target=_watch_status, args=(server.client(), engine["id"], statuses, stop)))
    started = time.monotonic()
    for worker in workers:
        worker.start()
    try:
        time.sleep(4)
        victim = _ready_replicas(http, engine["id"])[0]
        answered_before_kill = outcomes.answered
        os.kill(replica_pid(server.data_dir, victim["url"]), signal.SIGKILL)
        wait_for(lambda: len(_ready_replicas(http, engine["id"])) == 2
                 and victim["id"] not in {r["id"] for r in _ready_replicas(http, engine["id"])},
                 timeout=90, what="the killed replica's replacement to be ready")
        time.sleep(max(3.0, LOAD_AT_LEAST_S - (time.monotonic() - started)))  # the replacement serves too
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=60)

    assert outcomes.failures == [], outcomes.failures
    assert outcomes.answered > answered_before_kill > 0
    assert outcomes.streams_complete > 0
    assert outcomes.streams_cut_short <= 2  # at most the two streams in flight on the killed replica
    assert statuses == {"Active"}, statuses
    assert _retries(server) >= 1  # calls were in flight on the killed replica, and went elsewhere
