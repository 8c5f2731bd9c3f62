"""The sweep's (engine) run: the engine stepped on the caller's thread under a closed loop keeps
its streams in flight, replaces each finished request at once, times every token and stops
starting requests when told to."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.config import fixed_prompts
from bench.inprocess import engine_alone
from bench.models import ModelShape, build_base

SHAPE = ModelShape(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=128)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_base(tmp_path_factory.mktemp("engine-alone") / "base", SHAPE)


def test_every_request_runs_to_its_length_with_a_time_per_token(base: Path) -> None:
    prompts = fixed_prompts(base, 4, 8)
    load = engine_alone(base, {"max_loras": 2}, prompts[:2], prompts, concurrency=3, count=7,
                        max_tokens=5, warmup_tokens=2)
    result = load(None)
    assert not result.abandoned and len(result.records) == 7
    for record in result.records:
        assert record.error is None and record.finish_reason == "length"
        assert record.completion_tokens == 5 and len(record.chunk_times) == 5
        assert record.sent <= record.chunk_times[0] <= record.chunk_times[-1] <= record.done
    # Closed loop: the fourth request starts when one of the first three ends, not before.
    first_done = min(record.done for record in result.records[:3])
    assert result.records[3].sent >= first_done


def test_a_stop_check_ends_the_load_after_the_requests_in_flight(base: Path) -> None:
    prompts = fixed_prompts(base, 2, 8)
    load = engine_alone(base, {"max_loras": 2}, prompts[:1], prompts, concurrency=2, count=10,
                        max_tokens=3, warmup_tokens=1)
    result = load(lambda: True)
    assert result.abandoned
    assert len(result.records) == 2  # the first two, started before any check; both finish
    assert all(record.finish_reason == "length" for record in result.records)
