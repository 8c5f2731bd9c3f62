"""A cluster engine follows its load on real replicas: a step load scales it from one replica to
two, and once the load stops it drains back to one, without a single failed call. The new replica
loads the engine's adapters before it takes a request, so a deployment already served stays
Deployed throughout."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.integration.harness import ServerProcess, engine_status, wait_deployments, wait_engine, wait_for
from tests.integration.test_textgen import create_engine, deploy, register_job

pytestmark = pytest.mark.integration

AUTOSCALING = {"min_replicas": 1, "max_replicas": 2, "metric": "concurrency", "target": 1,
               "upscale_delay_s": 0, "downscale_delay_s": 5}


def _ready(engine: dict[str, Any] | None) -> list[dict[str, Any]]:
    return [r for r in (engine or {}).get("replicas", []) if r["status"] == "ready"]


def test_a_step_load_scales_up_and_back_down_with_no_failed_call(  # type: ignore[no-untyped-def]
    start_server, tiny_llama_dir: Path, tiny_adapter_dirs: list[Path]
) -> None:
    server: ServerProcess = start_server()
    http = server.client()
    engine = create_engine(http, "elastic", tiny_llama_dir, autoscaling=AUTOSCALING)
    engine = wait_engine(http, engine["id"], "Active")
    job = register_job(http, tiny_llama_dir, tiny_adapter_dirs[:1])
    deploy(http, engine["id"], "elastic-ft", job["id"], 1)
    engine = wait_deployments(http, engine["id"])
    assert len(_ready(engine)) == 1
    deployed_events = len(http.get(f"/v1/engines/{engine['id']}/events", params={"limit": 1000}).json()["data"])
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=server.api_key, max_retries=0)
    stop = threading.Event()
    answered, failures = [0], []
    lock = threading.Lock()

    def load(model: str) -> None:
        while not stop.is_set():
            try:
                reply = client.completions.create(model=model, prompt="the cat sat", max_tokens=8,
                                                  extra_body={"ignore_eos": True})
                assert reply.usage is not None and reply.usage.completion_tokens == 8
                with lock:
                    answered[0] += 1
            except Exception as exc:  # every failure is a finding, whatever its kind
                with lock:
                    failures.append(repr(exc))

    threads = [threading.Thread(target=load, args=(model,), daemon=True)
               for model in ("elastic", "elastic-ft", "elastic", "elastic-ft")]
    for thread in threads:
        thread.start()
    try:
        scaled = wait_for(lambda: (e := engine_status(http, engine["id"])) and len(_ready(e)) == 2 and e,
                          timeout=120, what="a second ready replica under load")
        decision = scaled["autoscaler"]
        assert decision["replicas"] == 2 and "up from 1 to 2" in decision["reason"], decision
        time.sleep(3)  # both replicas serve a while
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert failures == [] and answered[0] > 0

    # The load is gone: the windowed average decays, and after the down delay one replica drains.
    def back_to_one() -> dict[str, Any] | None:
        now = engine_status(http, engine["id"])
        return now if now and len(now["replicas"]) == 1 and len(_ready(now)) == 1 else None

    settled = wait_for(back_to_one, timeout=120, what="the engine to drain back to one replica")
    assert settled["status"] == "Active" and settled["autoscaler"]["replicas"] == 1
    events = http.get(f"/v1/engines/{engine['id']}/events", params={"limit": 1000}).json()["data"]
    assert any(e["to"] == "draining" and e["reason"] == "scaled down" for e in events)
    # Scaling touched replicas only: no deployment moved once both were Deployed.
    moved = [e for e in events[deployed_events:] if e["name"] in ("elastic", "elastic-ft")
             and e["object"] != engine["id"]]
    assert moved == [], moved
    assert any(e["to"] == "removed" and e["reason"] == "drained" for e in events)
    reply = client.completions.create(model="elastic", prompt="still here", max_tokens=2)
    assert reply.choices[0].text is not None
