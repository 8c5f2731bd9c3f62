"""The engine's step timers: each phase of a decode step is counted where it runs, the engine
thread's phases fit inside its steps, and ``GET /metrics`` shows them as counters."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from enginehouse.runtime.textgen.timers import ENGINE_PHASES
from tests.unit.runtime.support import PROMPTS, Harness


def _scraped(harness: Harness) -> dict[str, float]:
    values = {}
    for family in text_string_to_metric_families(harness.runner.metrics.render().decode()):
        for sample in family.samples:
            if family.name in ("enginehouse_engine_steps", "enginehouse_engine_phase_seconds"):
                values[sample.labels.get("kind") or sample.labels["phase"]] = sample.value
    return values


def test_phases_are_timed_and_fit_in_the_steps(make_harness: Callable[..., Harness],
                                               tiny_adapter_dirs: list[Path]) -> None:
    harness = make_harness()
    harness.runner.load_adapter("ft0", str(tiny_adapter_dirs[0]))
    base = harness.request(PROMPTS[0], max_tokens=6, ignore_eos=True)
    mixed = harness.request(PROMPTS[1], adapter="ft0", max_tokens=6, ignore_eos=True)
    harness.submit(base, mixed)
    harness.run(base, mixed)
    timers = harness.engine.timers
    # One prefill for both, then five decode steps of two rows each; the prefill shares the first.
    assert (timers.prefills, timers.decode_steps, timers.decode_rows, timers.steps) == (1, 5, 10, 5)
    assert all(getattr(timers, phase) > 0 for phase in ENGINE_PHASES)
    assert sum(getattr(timers, phase) for phase in ENGINE_PHASES) <= timers.step
    scraped = _scraped(harness)
    assert scraped["decode_steps"] == 5 and scraped["lora"] == timers.lora


def test_a_base_only_batch_spends_nothing_on_lora(make_harness: Callable[..., Harness],
                                                  tiny_adapter_dirs: list[Path]) -> None:
    harness = make_harness()
    harness.runner.load_adapter("ft0", str(tiny_adapter_dirs[0]))
    request = harness.request(PROMPTS[0], max_tokens=4)
    harness.submit(request)
    harness.run(request)
    assert harness.engine.timers.lora == 0.0 and harness.engine.timers.forward > 0
