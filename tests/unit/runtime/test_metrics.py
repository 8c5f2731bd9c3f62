"""A replica's ``GET /metrics``: the series move as requests are served (in-process app)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from enginehouse.protocol.sampling import SamplingParams
from enginehouse.runtime.metrics import ReplicaLoad, ReplicaMetrics, RequestRecord
from enginehouse.runtime.options import RuntimeOptions
from enginehouse.runtime.server import create_app
from enginehouse.runtime.textgen.runner import TextGenerationRunner
from enginehouse.runtime.textgen.runs import GenerationFailed, GenerationRun
from tests.prometheus import Scrape
from tests.unit.runtime.support import PROMPTS, Harness

HISTOGRAMS = [
    "enginehouse_time_to_first_token_seconds",
    "enginehouse_time_per_output_token_seconds",
    "enginehouse_e2e_request_latency_seconds",
    "enginehouse_request_queue_time_seconds",
]


@pytest.fixture(scope="module")
def client(tiny_llama_dir: Path, tiny_adapter_dirs: list[Path]) -> Iterator[TestClient]:
    options = RuntimeOptions(max_model_len=64, max_loras=1, max_cpu_loras=2)
    runner = TextGenerationRunner(base_model=str(tiny_llama_dir), served_name="tiny", options=options)
    runner.load()
    with TestClient(create_app(runner)) as test_client:
        for i, path in enumerate(tiny_adapter_dirs[:2]):
            assert test_client.put(f"/v1/adapters/ft{i}", json={"path": str(path)}).status_code == 200
        yield test_client


def scrape(client: TestClient) -> Scrape:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return Scrape.parse(response.text)


def _streamed_usage(client: TestClient, path: str, body: dict[str, Any]) -> dict[str, int]:
    body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    usage: dict[str, int] | None = None
    with client.stream("POST", path, json=body) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: {"):
                usage = json.loads(line[len("data: ") :]).get("usage") or usage
    assert usage is not None
    return usage


def test_series_exist_before_any_request(client: TestClient) -> None:
    metrics = scrape(client)
    assert metrics.types["enginehouse_requests"] == "counter"
    assert metrics.types["enginehouse_num_requests_running"] == "gauge"
    assert all(metrics.types[name] == "histogram" for name in HISTOGRAMS)
    assert metrics.value("enginehouse_num_requests_running") == 0
    assert metrics.value("enginehouse_num_requests_waiting") == 0
    # Both adapters were just read, so both sit in host memory; neither has served yet.
    assert metrics.value("enginehouse_resident_adapters", tier="host") == 2
    assert metrics.value("enginehouse_resident_adapters", tier="device") == 0


def test_metrics_move_as_requests_are_served(client: TestClient) -> None:
    before = scrape(client)
    usage: dict[str, list[dict[str, int]]] = {"tiny": [], "ft0": []}
    common = {"max_tokens": 5, "ignore_eos": True, "temperature": 0}
    reply = client.post("/v1/completions", json={"model": "tiny", "prompt": "the cat", **common})
    usage["tiny"].append(reply.json()["usage"])
    chat = {"model": "ft0", "messages": [{"role": "user", "content": "hi"}], **common}
    usage["ft0"].append(_streamed_usage(client, "/v1/chat/completions", chat))
    two = {"model": "ft0", "prompt": ["a b", "c d e"], "n": 2, **common}
    usage["ft0"].append(client.post("/v1/completions", json=two).json()["usage"])
    # Refused before generation: counted by the gateway, not as an engine request.
    assert client.post("/v1/completions", json={"model": "nope", "prompt": "x"}).status_code == 404
    after = scrape(client)

    for deployment, replies in usage.items():
        def moved(name: str, **labels: str) -> float:
            return after.delta(before, name, deployment=deployment, **labels)

        assert moved("enginehouse_requests_total", status="ok") == len(replies)
        assert moved("enginehouse_requests_total") == len(replies)
        assert moved("enginehouse_generation_tokens_total") == sum(u["completion_tokens"] for u in replies)
        assert moved("enginehouse_prompt_tokens_total") == sum(u["prompt_tokens"] for u in replies)
        for histogram in HISTOGRAMS:
            assert moved(f"{histogram}_count") == len(replies), histogram
            assert moved(f"{histogram}_bucket", le="+Inf") == len(replies), histogram
    assert after.delta(before, "enginehouse_requests_total", deployment="nope") == 0
    # The last answer can leave before the engine thread drops its finished rows from the batch.
    idle = _wait_idle(client)
    assert idle.value("enginehouse_num_requests_waiting") == 0
    # ft0 took the only fast-path slot; both adapters stay in host memory.
    assert after.value("enginehouse_resident_adapters", tier="device") == 1
    assert after.value("enginehouse_resident_adapters", tier="host") == 2


def test_unloaded_adapters_leave_the_resident_gauges(client: TestClient, tiny_adapter_dirs: list[Path]) -> None:
    assert client.put("/v1/adapters/extra", json={"path": str(tiny_adapter_dirs[2])}).status_code == 200
    reply = client.post("/v1/completions", json={"model": "extra", "prompt": "x", "max_tokens": 2})
    assert reply.status_code == 200
    during = scrape(client)
    # max_cpu_loras=2: the least recently used adapter (ft1) left host memory for "extra".
    assert during.value("enginehouse_resident_adapters", tier="host") == 2
    assert during.value("enginehouse_resident_adapters", tier="device") == 1
    assert client.delete("/v1/adapters/extra").status_code == 200
    after = scrape(client)
    # "extra" still occupies the slot physically, but it no longer serves: not counted.
    assert after.value("enginehouse_resident_adapters", tier="device") == 0
    assert after.value("enginehouse_resident_adapters", tier="host") == 1


def test_running_and_waiting_follow_the_engine(make_harness: Callable[..., Harness]) -> None:
    harness = make_harness(max_batch_size=2)

    def gauges() -> tuple[float, float]:
        metrics = Scrape.parse(harness.runner.metrics.render().decode())
        return metrics.value("enginehouse_num_requests_running"), metrics.value("enginehouse_num_requests_waiting")

    requests = [harness.request(prompt, max_tokens=3, ignore_eos=True) for prompt in PROMPTS[:3]]
    harness.submit(*requests)
    assert gauges() == (0, 3)
    harness.engine.step()  # two rows free: two requests join the batch, one waits
    assert gauges() == (2, 1)
    harness.run(*requests)
    assert gauges() == (0, 0)


def _run(harness: Harness, max_tokens: int) -> GenerationRun:
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
    prompt = harness.encode(PROMPTS[0])
    return GenerationRun(harness.engine, [prompt], [params], None, deployment="tiny", metrics=harness.runner.metrics)


def test_runs_report_how_they_ended(make_harness: Callable[..., Harness]) -> None:
    harness = make_harness()

    async def leave_after_the_first_token() -> None:
        run = _run(harness, max_tokens=50)
        run.start()
        async with aclosing(run.events()) as events:
            async for _ in events:
                break

    async def fail_while_queued() -> None:
        run = _run(harness, max_tokens=5)
        run.start()
        harness.engine.stop()  # no engine thread now: stopping fails what waits, at once
        with pytest.raises(GenerationFailed):
            await run.collect()

    harness.engine.start()
    asyncio.run(leave_after_the_first_token())
    harness.engine.stop()
    asyncio.run(fail_while_queued())
    metrics = Scrape.parse(harness.runner.metrics.render().decode())
    assert metrics.value("enginehouse_requests_total", deployment="tiny", status="aborted") == 1
    assert metrics.value("enginehouse_requests_total", deployment="tiny", status="error") == 1
    assert metrics.value("enginehouse_requests_total", status="ok") == 0
    # The aborted run was prefilled and made at least one token; the failed one never started.
    assert metrics.value("enginehouse_prompt_tokens_total") == len(harness.encode(PROMPTS[0]))
    assert metrics.value("enginehouse_generation_tokens_total") >= 1
    assert metrics.value("enginehouse_time_to_first_token_seconds_count") == 1
    assert metrics.value("enginehouse_request_queue_time_seconds_count") == 1
    assert metrics.value("enginehouse_e2e_request_latency_seconds_count") == 0


def _wait_idle(client: TestClient, timeout: float = 10.0) -> Scrape:
    deadline = time.monotonic() + timeout
    while True:
        metrics = scrape(client)
        if metrics.value("enginehouse_num_requests_running") == 0 or time.monotonic() > deadline:
            assert metrics.value("enginehouse_num_requests_running") == 0
            return metrics
        time.sleep(0.01)


def _record(status: str, **fields: Any) -> RequestRecord:
    usual: dict[str, Any] = {"prompt_tokens": 7, "generation_tokens": 4, "longest_choice": 5, "arrival": 10.0,
                             "admitted": 10.5, "first_token": 11.0, "finished": 13.0}
    return RequestRecord(deployment="d", status=status, **{**usual, **fields})


def test_cut_short_requests_count_but_leave_latencies_alone() -> None:
    metrics = ReplicaMetrics(ReplicaLoad)
    metrics.record(_record("ok"))
    metrics.record(_record("aborted", admitted=None, first_token=None, longest_choice=0, generation_tokens=0))
    metrics.record(_record("error"))
    scraped = Scrape.parse(metrics.render().decode())
    assert {s: scraped.value("enginehouse_requests_total", status=s) for s in ("ok", "aborted", "error")} == {
        "ok": 1, "aborted": 1, "error": 1,
    }
    # The request aborted while queued was never prefilled: its prompt is not counted.
    assert scraped.value("enginehouse_prompt_tokens_total") == 14
    assert scraped.value("enginehouse_generation_tokens_total") == 8
    assert scraped.value("enginehouse_request_queue_time_seconds_count") == 2
    assert scraped.value("enginehouse_time_to_first_token_seconds_count") == 2
    assert scraped.value("enginehouse_e2e_request_latency_seconds_count") == 1
    assert scraped.value("enginehouse_time_per_output_token_seconds_count") == 1
    # One token left nothing to divide: no time per output token.
    metrics.record(_record("ok", longest_choice=1))
    scraped = Scrape.parse(metrics.render().decode())
    assert scraped.value("enginehouse_time_per_output_token_seconds_count") == 1
    assert scraped.value("enginehouse_e2e_request_latency_seconds_count") == 2


def test_each_replica_has_its_own_registry() -> None:
    first, second = ReplicaMetrics(ReplicaLoad), ReplicaMetrics(ReplicaLoad)
    first.record(_record("ok"))
    assert Scrape.parse(second.render().decode()).value("enginehouse_requests_total") == 0
