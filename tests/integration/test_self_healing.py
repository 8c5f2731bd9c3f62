"""Replicas that hang or keep crashing, on a real server with real replica processes.

A replica stopped with SIGSTOP (alive, but answering nothing) is replaced once its health check
has gone unanswered for the hang timeout. A replica killed every time it starts is relaunched
after a backoff the engine's reason shows, and after the bound the engine is Failed with the last
crash's reason. Both servers run with short bounds so that the tests take seconds, not minutes.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.harness import (
    ServerProcess, engine_status, replica_pid, replica_pids, wait_engine, wait_for,
)
from tests.integration.test_textgen import create_engine

pytestmark = pytest.mark.integration


def _events(http: httpx.Client, engine_id: str) -> list[dict[str, Any]]:
    response = http.get(f"/v1/engines/{engine_id}/events", params={"limit": 1000})
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_a_hung_replica_is_replaced(start_server, tiny_llama_dir: Path) -> None:  # type: ignore[no-untyped-def]
    server: ServerProcess = start_server(settings={"ENGINEHOUSE_REPLICA_HANG_TIMEOUT_S": "3"})
    http = server.client()
    engine = create_engine(http, "stuck", tiny_llama_dir)
    engine = wait_engine(http, engine["id"], "Active")
    hung = engine["replicas"][0]
    pid = replica_pid(server.data_dir, hung["url"])
    os.kill(pid, signal.SIGSTOP)
    try:
        def replaced() -> dict[str, Any] | None:
            now = engine_status(http, engine["id"]) or {"replicas": []}
            ready = [r for r in now["replicas"] if r["status"] == "ready"]
            return now if ready and all(r["id"] != hung["id"] for r in ready) else None

        after = wait_for(replaced, timeout=120, what="the hung replica's replacement to be ready")
        assert after["status"] == "Active"
        removal = [e for e in _events(http, engine["id"])
                   if e["object"] == hung["id"] and e["to"] == "removed"]
        assert len(removal) == 1 and "stopped answering its health check" in removal[0]["reason"]
        wait_for(lambda: not Path(f"/proc/{pid}").exists() or _zombie(pid), timeout=30,
                 what="the hung process to be stopped")
        reply = http.post("/v1/completions", json={"model": "stuck", "prompt": "hello", "max_tokens": 3})
        assert reply.status_code == 200, reply.text
    finally:
        _kill(pid)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_a_crash_looping_replica_backs_off_then_fails_the_engine(start_server, tiny_llama_dir: Path) -> None:  # type: ignore[no-untyped-def]
    server: ServerProcess = start_server(settings={"ENGINEHOUSE_REPLICA_MAX_CRASHES": "3"})
    http = server.client()
    stop = threading.Event()

    def kill_every_replica() -> None:
        while not stop.is_set():
            for pid in replica_pids(server.data_dir):
                _kill(pid)
            time.sleep(0.05)

    killer = threading.Thread(target=kill_every_replica, daemon=True)
    killer.start()
    try:
        engine = create_engine(http, "looping", tiny_llama_dir)
        reasons: list[str] = []

        def failed() -> dict[str, Any] | None:
            now = engine_status(http, engine["id"])
            if now and now["status_reason"] and now["status_reason"] not in reasons:
                reasons.append(now["status_reason"])
            return now if now and now["status"] == "Failed" else None

        final = wait_for(failed, timeout=120, interval=0.1, what="the crash-looping engine to fail")
    finally:
        stop.set()
        killer.join(timeout=10)
    # Three failures in a row at least (one step may see more than one replica gone at once).
    match = re.match(r"replica keeps failing \((\d+) times in a row\): ", final["status_reason"])
    assert match and int(match.group(1)) >= 3, final["status_reason"]
    backoffs = [r for r in reasons if "next try at" in r]
    assert backoffs, reasons  # while it backed off, the reason said when the next try was
    launches = len(_launches(http, engine["id"]))
    assert launches >= 3
    time.sleep(2)  # a Failed engine is not retried
    assert len(_launches(http, engine["id"])) == launches and replica_pids(server.data_dir) == []


def _launches(http: httpx.Client, engine_id: str) -> list[dict[str, Any]]:
    return [e for e in _events(http, engine_id) if e["from"] is None and e["to"] == "starting"]
