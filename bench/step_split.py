"""Where one decode step's time goes, from the replica's own timers (``GET /metrics``), read around
each measured attempt of a run.

The engine thread's phases (model forward, LoRA, sampling, detokenize, emit, and what is left:
scheduling and KV-cache upkeep) divide its steps' wall time; the event loop's encoding of stream
chunks runs beside them on another thread, and the gateway's relay in another process. The relay
has no timer of its own: it is the server process's CPU time during the run (the gateway is all
it does then) per output token, times the tokens one decode step makes (its rows).

Every figure is an average per decode step, prefills included in the phases they took: a prefill
is a cost the decode steps between two arrivals share.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench.load import LoadResult, StopCheck
from bench.runs import RunOutcome
from enginehouse.replicaauth import ReplicaAddress
# The engine thread's parts of a step, in the order the charts stack them; "other" is the rest.
from enginehouse.runtime.textgen.timers import ENGINE_PHASES



def read_timers(replica: ReplicaAddress) -> dict[str, float]:
    """The replica's step counts and phase seconds so far, by name (``runtime/textgen/timers.py``)."""
    response = httpx.get(f"{replica.url}/metrics", headers=replica.headers(), timeout=30)
    response.raise_for_status()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(response.text):
        if family.name not in ("enginehouse_engine_steps", "enginehouse_engine_phase_seconds"):
            continue
        for sample in family.samples:
            if sample.name.endswith("_total"):
                values[sample.labels.get("kind") or sample.labels["phase"]] = sample.value
    return values


class TimerWindows:
    """Wraps a run's load so the replica's timers are read before and after every attempt; the
    windows add up (an abandoned attempt's steps are as good a sample of a step as any)."""

    def __init__(self, replica: ReplicaAddress) -> None:
        self.replica = replica
        self.total: dict[str, float] = {}

    def around(self, load: Callable[[StopCheck | None], LoadResult]) -> Callable[[StopCheck | None], LoadResult]:
        def timed(stop: StopCheck | None) -> LoadResult:
            before = read_timers(self.replica)
            result = load(stop)
            after = read_timers(self.replica)
            for name, value in after.items():
                self.total[name] = self.total.get(name, 0.0) + value - before.get(name, 0.0)
            return result

        return timed


@dataclass(frozen=True)
class StepSplit:
    decode_steps: int
    rows_per_step: float
    step_ms: float  # the engine thread's wall time per decode step
    forward_ms: float
    lora_ms: float
    sampling_ms: float
    detokenize_ms: float
    emit_ms: float
    other_ms: float  # scheduling, KV-cache upkeep: the step's time the phases above leave
    encode_ms: float  # event loop, beside the engine thread
    relay_ms: float | None  # the gateway's CPU per step; None when the server's CPU is unknown

    def as_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


def step_split(timers: dict[str, float], run: RunOutcome) -> StepSplit | None:
    """Per decode step, from the summed timer windows of ``run``; None without a decode step."""
    steps = timers.get("decode_steps", 0.0)
    if steps <= 0:
        return None
    per_step = {name: round(timers.get(name, 0.0) * 1000 / steps, 3) for name in (*ENGINE_PHASES, "encode", "step")}
    other = per_step["step"] - sum(per_step[name] for name in ENGINE_PHASES)
    rows = timers.get("decode_rows", 0.0) / steps
    return StepSplit(decode_steps=int(steps), rows_per_step=round(rows, 2), step_ms=per_step["step"],
                     forward_ms=per_step["forward"], lora_ms=per_step["lora"], sampling_ms=per_step["sampling"],
                     detokenize_ms=per_step["detokenize"], emit_ms=per_step["emit"], other_ms=round(other, 3),
                     encode_ms=per_step["encode"], relay_ms=_relay_ms(run, rows))


def _relay_ms(run: RunOutcome, rows_per_step: float) -> float | None:
    server = run.cpu_s.get("server")
    if server is None or run.stats is None or not run.stats.counted:
        return None
    return round(server * 1000 / run.stats.counted * rows_per_step, 3)
