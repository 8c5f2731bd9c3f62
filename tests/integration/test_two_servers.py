"""Two servers on one PostgreSQL database and one data directory: both serve the API and the
gateway, one runs the reconciler. SIGKILL that one: the other takes over (the time is printed),
adopts the running replica rather than starting another, and an engine created through it comes
up and answers.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.databases import postgres_schema
from tests.integration.harness import (
    ServerProcess,
    engine_status,
    replica_pids,
    wait_deployments,
    wait_engine,
    wait_for,
)
from tests.integration.reference import greedy_completion
from tests.integration.test_server_restart import PidWatch
from tests.integration.test_textgen import create_engine, deploy, register_job

pytestmark = pytest.mark.integration

PROMPT = "the cat sat on the"
MAX_TOKENS = 6
POLL_S = "1"  # how often the standby tries to take over
TAKEOVER_BOUND_S = 60.0  # how long to wait at all, so that a slow takeover is measured, not a timeout
TAKEOVER_TARGET_S = 15.0  # the target: a standby leads within 15 s of the leader's death
SETTLED_WATCH_S = 5.0  # a duplicate replica would be launched in the new leader's first steps


@pytest.fixture()
def two_servers(tmp_path: Path) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    with postgres_schema() as url:
        data_dir = tmp_path / "shared"
        key = f"eh-test-{secrets.token_hex(8)}"
        servers = [ServerProcess(data_dir, key, url, {"ENGINEHOUSE_LEADER_POLL_S": POLL_S}) for _ in range(2)]
        servers[1].log_path = data_dir / "server-2.log"  # one data directory, a log each
        try:
            servers[0].start()
            servers[1].start()
            yield servers[0], servers[1]
        finally:
            for server in servers:
                server.stop()


def role(server: ServerProcess) -> str | None:
    try:
        return str(httpx.get(f"{server.url}/health", timeout=2).json()["reconciler"])
    except (httpx.HTTPError, ValueError, KeyError):
        return None


def complete(server: ServerProcess, model: str) -> str:
    response = server.client().post("/v1/completions", json={
        "model": model, "prompt": PROMPT, "max_tokens": MAX_TOKENS, "temperature": 0})
    assert response.status_code == 200, response.text
    return str(response.json()["choices"][0]["text"])


def replica_ids(server: ServerProcess, engine_id: str) -> set[str]:
    engine: dict[str, Any] | None = engine_status(server.client(), engine_id)
    return {r["id"] for r in (engine or {}).get("replicas", [])}


def test_the_standby_takes_over_from_a_killed_leader(  # type: ignore[no-untyped-def]
    two_servers, tiny_llama_dir: Path, tiny_adapter_dirs: list[Path]
) -> None:
    first, second = two_servers
    assert (role(first), role(second)) == ("leader", "standby")
    for server in (first, second):
        listed = server.client().get("/v1/engines")
        assert listed.status_code == 200, listed.text

    # Created through the standby: the leader finds the change in the events table.
    http = second.client()
    job = register_job(http, tiny_llama_dir, tiny_adapter_dirs[:1])
    engine = create_engine(http, "left", tiny_llama_dir)
    deploy(http, engine["id"], "left-ft", job["id"], 1)
    wait_engine(http, engine["id"], "Active")
    wait_deployments(http, engine["id"])
    expected = {"left": greedy_completion(tiny_llama_dir, None, PROMPT, MAX_TOKENS),
                "left-ft": greedy_completion(tiny_llama_dir, tiny_adapter_dirs[0], PROMPT, MAX_TOKENS)}
    for server in (first, second):
        for model, text in expected.items():
            assert complete(server, model) == text
    pids = sorted(replica_pids(first.data_dir))
    replicas = replica_ids(second, engine["id"])
    assert len(pids) == 1 and len(replicas) == 1, (pids, replicas)

    with PidWatch(first.data_dir) as watch:
        first.kill()
        killed = time.monotonic()
        # The replica outlives the server that started it, and the standby's gateway reaches it
        # while nobody leads.
        assert complete(second, "left-ft") == expected["left-ft"]
        wait_for(lambda: role(second) == "leader", timeout=TAKEOVER_BOUND_S, interval=0.05,
                 what="the standby to take over")
        takeover_s = time.monotonic() - killed
        print(f"\ntakeover: the standby led {takeover_s:.2f} s after the leader's SIGKILL "
              f"(poll every {POLL_S} s)")
        time.sleep(SETTLED_WATCH_S)
        for model, text in expected.items():
            assert complete(second, model) == text
        assert wait_engine(http, engine["id"], "Active")["status"] == "Active"
    assert watch.seen == set(pids), f"replica processes seen: {sorted(watch.seen)}, before the kill: {pids}"
    assert replica_ids(second, engine["id"]) == replicas  # adopted, not replaced
    assert takeover_s <= TAKEOVER_TARGET_S, f"the standby took {takeover_s:.1f} s to lead"

    # The survivor leads: a new engine created through it comes up and answers.
    started = time.monotonic()
    fresh = create_engine(http, "fresh", tiny_llama_dir)
    wait_engine(http, fresh["id"], "Active")
    assert complete(second, "fresh") == expected["left"]  # same base model, same greedy answer
    print(f"a new engine through the survivor answered after {time.monotonic() - started:.1f} s")
    assert len(replica_pids(second.data_dir)) == 2
