"""A server killed (SIGKILL) under load, then started again on the same data directory: it adopts
the replicas it finds, starts no other, and the same deployments are Deployed and answer
correctly.

Calls in flight when the server dies may fail, and so may calls made while it is down; every call
made once it is back must succeed, with the answer the model gives when run directly.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.integration.harness import (
    ServerProcess, engine_status, replica_pids, wait_deployments, wait_engine, wait_for,
)
from tests.integration.reference import greedy_completion
from tests.integration.test_textgen import create_engine, deploy, register_job

pytestmark = pytest.mark.integration

ENGINE = "phoenix"
ADAPTER = "phoenix-ft"
PROMPT = "the cat sat on the"
MAX_TOKENS = 8
# min = max: the engine runs exactly two replicas, so any third process is a duplicate.
AUTOSCALING = {"min_replicas": 2, "max_replicas": 2, "metric": "concurrency"}
LOAD_THREADS = 4  # a streaming and a plain caller for each deployment
LOAD_BEFORE_KILL_S = 3.0
SETTLED_WATCH_S = 5.0


@dataclass
class Outcomes:
    """What the callers saw: answers, by kind, and what went wrong, in words."""

    answered: int = 0
    streamed: int = 0
    failures: list[str] = field(default_factory=list)
    in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, outcome: str) -> None:
        with self.lock:
            if outcome in ("answered", "streamed"):
                setattr(self, outcome, getattr(self, outcome) + 1)
            else:
                self.failures.append(outcome)

    def call(self, attempt: Callable[[], str]) -> None:
        with self.lock:
            self.in_flight += 1
        try:
            outcome = attempt()
        except Exception as exc:  # every failure is kept, whatever its kind
            outcome = f"failed: {exc!r}"
        finally:
            with self.lock:
                self.in_flight -= 1
        self.add(outcome)


class Load:
    """Callers that keep both deployments busy, streamed and not, until stopped."""

    def __init__(self, server: ServerProcess, expected: dict[str, str]) -> None:
        self.client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=server.api_key,
                                    max_retries=0, timeout=60)
        self.expected = expected  # model → its greedy answer to PROMPT
        self.outcomes = Outcomes()
        self._stop = threading.Event()
        calls = [(self._complete, model) for model in expected] + [(self._stream, model) for model in expected]
        self._threads = [threading.Thread(target=self._keep_calling, args=call, daemon=True)
                         for call in calls[:LOAD_THREADS]]

    def __enter__(self) -> "Load":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, error: type[BaseException] | None, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=90)
        # A failure inside the block is the one to see; a stuck caller only follows from it.
        assert error is not None or not any(t.is_alive() for t in self._threads), "a caller is stuck"

    def _keep_calling(self, call: Callable[[str], str], model: str) -> None:
        while not self._stop.is_set():
            self.outcomes.call(lambda: call(model))

    def _complete(self, model: str) -> str:
        reply = self.client.completions.create(model=model, prompt=PROMPT, max_tokens=MAX_TOKENS, temperature=0)
        text = reply.choices[0].text
        return "answered" if text == self.expected[model] else f"{model} answered {text!r}"

    def _stream(self, model: str) -> str:
        stream = self.client.completions.create(model=model, prompt=PROMPT, max_tokens=MAX_TOKENS,
                                                temperature=0, stream=True)
        text = "".join(chunk.choices[0].text for chunk in stream if chunk.choices)
        return "streamed" if text == self.expected[model] else f"{model} streamed {text!r}"


class PidWatch:
    """Every replica process of a data directory seen while it runs: a duplicate started and
    stopped again between two looks at the engine still shows here."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.seen: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> "PidWatch":
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.seen.update(replica_pids(self.data_dir))
            time.sleep(0.05)


def _ready_ids(engine: dict[str, Any] | None) -> set[str]:
    return {r["id"] for r in (engine or {}).get("replicas", []) if r["status"] == "ready"}


def _adapter_everywhere(server: ServerProcess, engine: dict[str, Any] | None) -> dict[str, Any] | None:
    """The engine once both its replicas report the adapter loaded (its deployment is Deployed
    again after the second replica loaded it: no event is still to come)."""
    replicas = (engine or {}).get("replicas", [])
    if len(replicas) != 2:
        return None
    for replica in replicas:
        try:
            with server.replica_client(replica["id"], timeout=5) as own:
                adapters = own.get("/health").json().get("adapters") or {}
        except (httpx.HTTPError, ValueError):
            return None
        if (adapters.get(ADAPTER) or {}).get("status") != "loaded":
            return None
    return engine


def _events(http: httpx.Client, engine_id: str) -> list[dict[str, Any]]:
    response = http.get(f"/v1/engines/{engine_id}/events", params={"limit": 1000})
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


def _wait_under_way(outcomes: Outcomes) -> None:
    """Until calls have been answered and every caller has one in flight."""
    wait_for(lambda: outcomes.answered + outcomes.streamed >= 2 * LOAD_THREADS
             and outcomes.in_flight == LOAD_THREADS, timeout=60, interval=0.01, what="calls in flight")


def test_killed_under_load_the_server_adopts_its_replicas_on_restart(  # type: ignore[no-untyped-def]
    start_server, tiny_llama_dir: Path, tiny_adapter_dirs: list[Path]
) -> None:
    server: ServerProcess = start_server()
    http = server.client()
    job = register_job(http, tiny_llama_dir, tiny_adapter_dirs[:1])
    engine = create_engine(http, ENGINE, tiny_llama_dir, autoscaling=AUTOSCALING)
    deploy(http, engine["id"], ADAPTER, job["id"], 1)
    wait_engine(http, engine["id"], "Active")
    wait_for(lambda: len(_ready_ids(engine_status(http, engine["id"]))) == 2, timeout=120,
             what="two ready replicas")
    wait_for(lambda: _adapter_everywhere(server, engine_status(http, engine["id"])), timeout=120,
             what=f"{ADAPTER} loaded on both replicas")
    replica_ids = _ready_ids(wait_deployments(http, engine["id"]))
    pids = sorted(replica_pids(server.data_dir))
    assert len(pids) == 2, pids
    expected = {ENGINE: greedy_completion(tiny_llama_dir, None, PROMPT, MAX_TOKENS),
                ADAPTER: greedy_completion(tiny_llama_dir, tiny_adapter_dirs[0], PROMPT, MAX_TOKENS)}
    assert expected[ENGINE] != expected[ADAPTER]  # so an answer shows which model gave it
    events_before = _events(http, engine["id"])

    with PidWatch(server.data_dir) as watch:
        with Load(server, expected) as before_kill:
            time.sleep(LOAD_BEFORE_KILL_S)
            _wait_under_way(before_kill.outcomes)
            in_flight_at_kill = before_kill.outcomes.in_flight
            server.kill()
        # Only the server's death may break a call: never a wrong answer.
        assert before_kill.outcomes.answered > 0 and before_kill.outcomes.streamed > 0
        assert not [f for f in before_kill.outcomes.failures if not f.startswith("failed: ")], \
            before_kill.outcomes.failures
        assert in_flight_at_kill > 0 and before_kill.outcomes.failures

        restarted = start_server(data_dir=server.data_dir, api_key=server.api_key)
        http = restarted.client()
        # Calls from the moment the new server answers its health check, through its first steps.
        with Load(restarted, expected) as after_restart:
            back = wait_deployments(http, engine["id"])
            # Two ready, not these two: a replacement is told apart by the checks below.
            wait_for(lambda: len(_ready_ids(engine_status(http, engine["id"]))) >= 2, timeout=60,
                     what="two ready replicas after the restart")
            _wait_under_way(after_restart.outcomes)
            time.sleep(SETTLED_WATCH_S)  # a duplicate would be launched in the first steps
            settled = engine_status(http, engine["id"])
        assert watch.seen == set(pids), f"replica processes seen: {sorted(watch.seen)}, before the kill: {pids}"

    assert after_restart.outcomes.failures == [], after_restart.outcomes.failures
    assert after_restart.outcomes.answered > 0 and after_restart.outcomes.streamed > 0
    assert back["status"] == "Active"
    assert settled is not None and settled["status"] == "Active"
    assert {r["id"] for r in settled["replicas"]} == replica_ids
    assert {d["name"]: d["status"] for d in settled["deployments"]} == {ENGINE: "Deployed", ADAPTER: "Deployed"}
    assert sorted(replica_pids(server.data_dir)) == pids
    events = _events(http, engine["id"])
    # Adopting changes nothing: no replica launched or removed, no deployment loaded again.
    assert events[len(events_before):] == [], events[len(events_before):]
