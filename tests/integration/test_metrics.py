"""The server's ``GET /metrics``: gateway series, replica counts, and the replicas' own series
re-exposed with engine and replica labels, moving as requests are served."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.integration.harness import ServerProcess, wait_deployments, wait_for
from tests.integration.test_textgen import create_engine, deploy, register_job
from tests.prometheus import Scrape

ENGINE = "metered"
ADAPTER = "metered-ft"


@pytest.fixture(scope="module")
def server(start_server, tiny_llama_dir: Path, tiny_adapter_dirs: list[Path]) -> ServerProcess:  # type: ignore[no-untyped-def]
    server = start_server()
    http = server.client()
    job = register_job(http, tiny_llama_dir, tiny_adapter_dirs[:1], name="metered-job")
    engine = create_engine(http, ENGINE, tiny_llama_dir)
    deploy(http, engine["id"], ADAPTER, job["id"], 1)
    wait_deployments(http, engine["id"])
    return server


def scrape(server: ServerProcess) -> Scrape:
    response = httpx.get(f"{server.url}/metrics", timeout=30)  # an operator endpoint: no API key
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return Scrape.parse(response.text)


def _serve(client: openai.OpenAI, model: str) -> list[Any]:
    """One plain completion and one streamed chat; their usages."""
    extra = {"ignore_eos": True}
    reply = client.completions.create(model=model, prompt="the cat sat", max_tokens=4, temperature=0, extra_body=extra)
    usages = [reply.usage]
    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=3, temperature=0, stream=True,
        stream_options={"include_usage": True}, extra_body=extra,
    )
    usages.append([chunk.usage for chunk in stream if chunk.usage is not None][-1])
    return usages


def test_metrics_move_as_requests_are_served(server: ServerProcess) -> None:
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=server.api_key, max_retries=0)
    before = scrape(server)
    usages = {model: _serve(client, model) for model in (ENGINE, ADAPTER)}

    def settled() -> Scrape | None:
        # A stream's gateway series are recorded as it closes, just after the client's last byte.
        now = scrape(server)
        moved = now.delta(before, "enginehouse_gateway_request_latency_seconds_count", engine=ENGINE)
        return now if moved == 4 else None

    after = wait_for(settled, timeout=10, what="the gateway to record four calls")
    for model, replies in usages.items():
        route = {"organization": "default", "engine": ENGINE, "deployment": model}

        def moved(name: str, **labels: str) -> float:
            return after.delta(before, name, **route, **labels)

        assert moved("enginehouse_gateway_requests_total", code="200") == 2
        assert moved("enginehouse_gateway_requests_total") == 2
        assert moved("enginehouse_requests_total", status="ok") == 2
        assert moved("enginehouse_prompt_tokens_total") == sum(u.prompt_tokens for u in replies)
        assert moved("enginehouse_generation_tokens_total") == sum(u.completion_tokens for u in replies)
        for histogram in ("time_to_first_token", "time_per_output_token", "e2e_request_latency", "request_queue_time"):
            assert moved(f"enginehouse_{histogram}_seconds_count") == 2, histogram
        # Replica series name their replica as well, so several replicas never collide.
        assert all(labels.get("replica") for labels, _ in after.matching("enginehouse_requests_total", **route))

    assert after.value("enginehouse_engine_replicas", engine=ENGINE, status="ready") == 1
    assert after.value("enginehouse_engine_replicas", engine=ENGINE, status="starting") == 0
    assert after.value("enginehouse_resident_adapters", engine=ENGINE, tier="host") == 1
    assert after.matching("enginehouse_num_requests_running", engine=ENGINE)
    assert after.matching("enginehouse_num_requests_waiting", engine=ENGINE)


def test_unknown_models_are_not_series(server: ServerProcess) -> None:
    http = server.client()
    response = http.post("/v1/completions", json={"model": "no-such-model", "prompt": "x"})
    assert response.status_code == 404
    metrics = scrape(server)
    assert not metrics.matching("enginehouse_gateway_requests_total", deployment="no-such-model")


def test_the_reconciler_counts_its_steps_by_cause(server: ServerProcess) -> None:
    metrics = scrape(server)
    steps = {labels["cause"]: value for labels, value in metrics.matching("enginehouse_reconciler_steps_total")}
    assert set(steps) == {"change", "timer", "resync"}
    # The engine was created and deployed onto (changes); its replica's health is checked (timers).
    assert steps["change"] >= 1 and steps["timer"] >= 1
    assert metrics.value("enginehouse_reconciler_step_seconds_count") >= 1
