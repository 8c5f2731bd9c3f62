"""One measured run: its load, its numbers, and what else the machine was doing meanwhile.

On a shared machine a neighbour's burst can cut a run's throughput several-fold. A run therefore
starts when the machine is quiet (or after a bounded wait), an attempt that others disturb is
abandoned or measured again while the time budget allows, and the least disturbed attempt is
kept; every attempt is reported.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from bench.load import LoadResult, RequestRecord, StopCheck
from bench.machine import CpuMeter, wait_until_quiet
from bench.stats import Stats, summarize

_T0 = time.monotonic()
# When the current part of the benchmark began: each part gets the whole budget for itself.
_part_started = _T0


@dataclass(frozen=True)
class Patience:
    """How hard to try for an undisturbed measurement."""

    # Share of the machine's CPU other processes may use for a run to count as undisturbed.
    quiet_share: float = 0.10
    max_wait_s: float = 60.0
    retries: int = 3
    # No more waiting or retrying once the current part of the benchmark has run this long.
    budget_s: float = 600.0

    def allows_more(self) -> bool:
        return time.monotonic() - _part_started < self.budget_s


class Disturbable(Protocol):
    others_cpu_share: float  # share of the machine's CPU other processes used meanwhile


D = TypeVar("D", bound=Disturbable)


def least_disturbed(attempt: Callable[[int], D], patience: Patience, again: str) -> tuple[D, int]:
    """``attempt(n)`` (n from 1) done again, saying ``again``, while others disturbed it and
    patience allows; the least disturbed result, and how many attempts were made. Each attempt
    waits for its own quiet (``wait_for_quiet``)."""
    best: D | None = None
    attempts = 0
    for attempts in range(1, 2 + patience.retries):
        result = attempt(attempts)
        if best is None or result.others_cpu_share < best.others_cpu_share:
            best = result
        if (result.others_cpu_share <= patience.quiet_share or attempts > patience.retries
                or not patience.allows_more()):
            break
        progress(again)
    assert best is not None
    return best, attempts


def start_part() -> None:
    """A new part of the benchmark (text generation, tasks) starts with a fresh patience budget,
    so a long wait in one part does not leave the next measured without retries."""
    global _part_started
    _part_started = time.monotonic()


PATIENCE = Patience()


def progress(message: str) -> None:
    print(f"[{time.monotonic() - _T0:7.1f}s] {message}", flush=True)


@dataclass
class RunOutcome:
    key: str
    description: str
    stats: Stats | None = None
    # Why there is no number: the run could not happen here.
    error: str | None = None
    others_cpu_share: float | None = None
    # CPU seconds the benchmark's own processes used during the measured attempt, by role.
    cpu_s: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # Every attempt: (the stats' rate, or None when abandoned; others' CPU share).
    attempts: list[tuple[float | None, float]] = field(default_factory=list)

    @property
    def rate(self) -> float | None:
        """Tokens/s of a generation run, inputs/s of a run of calls; None without a number."""
        return self.stats.rate if self.stats and self.stats.rate else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "description": self.description,
            "stats": self.stats.as_dict() if self.stats else None,
            "error": self.error,
            "others_cpu_share": self.others_cpu_share,
            "cpu_s": self.cpu_s,
            "attempts": [{self._rate_key: t, "others_cpu_share": s, "abandoned": t is None}
                         for t, s in self.attempts],
            "notes": self.notes,
        }

    @property
    def _rate_key(self) -> str:
        return self.stats.rate_key if self.stats else "rate"


def wait_for_quiet(patience: Patience = PATIENCE) -> None:
    if patience.max_wait_s <= 0 or not patience.allows_more():
        return
    waited, share = wait_until_quiet(patience.quiet_share, patience.max_wait_s)
    if share > patience.quiet_share:
        progress(f"other processes still use {share:.0%} of the CPU after {waited:.0f} s; going ahead")
    elif waited > 5:
        progress(f"waited {waited:.0f} s for other processes to quiet down")


class Watchdog:
    """A StopCheck that gives up on an attempt once others have taken more than ``limit`` of the
    machine since it began, so a disturbed attempt costs seconds rather than minutes (a
    disturbed replica on two cores can run ten times slower)."""

    def __init__(self, limit: float, grace_s: float = 5.0, every_s: float = 1.0) -> None:
        self.limit = limit
        self.grace_s = grace_s
        self.every_s = every_s
        self.meter = CpuMeter().start()
        self.started = self.last_check = time.monotonic()
        self.share = 0.0
        self.tripped = False

    def __call__(self) -> bool:
        now = time.monotonic()
        if self.tripped or now - self.started < self.grace_s or now - self.last_check < self.every_s:
            return self.tripped
        self.last_check = now
        self.share = self.meter.finish().others_share
        self.tripped = self.share > self.limit
        return self.tripped


Load = Callable[[StopCheck | None], LoadResult]
Summarize = Callable[[list[RequestRecord], float], Stats]


def measure(key: str, description: str, load: Load, patience: Patience = PATIENCE,
            summarize: Summarize = summarize) -> RunOutcome:
    """Run ``load`` (warm-up done by the caller) and summarise the least disturbed attempt.

    Every attempt but the last may be abandoned by a watchdog when others take the machine; the
    last always runs to the end, so a run has a number even on a machine that never goes quiet.
    """
    best: RunOutcome | None = None
    attempts: list[tuple[float | None, float]] = []
    for attempt in range(1 + patience.retries):
        last = attempt == patience.retries or not patience.allows_more()
        wait_for_quiet(patience)
        progress(f"({key}) {description}: measuring" + (f" (attempt {attempt + 1})" if attempt else ""))
        watchdog = None if last else Watchdog(2 * patience.quiet_share)
        outcome = _measure_once(key, description, load, watchdog, summarize)
        if outcome is None:
            assert watchdog is not None
            attempts.append((None, watchdog.share))
            progress(f"({key}) abandoned: other processes took {watchdog.share:.0%} of the CPU")
            continue
        assert outcome.stats is not None and outcome.others_cpu_share is not None
        attempts.append((outcome.stats.rate, outcome.others_cpu_share))
        if best is None or outcome.others_cpu_share < (best.others_cpu_share or 0.0):
            best = outcome
        if last or outcome.others_cpu_share <= patience.quiet_share:
            break
        progress(f"({key}) other processes used {outcome.others_cpu_share:.0%} of the CPU: measuring again")
    assert best is not None
    best.attempts = attempts
    if len(attempts) > 1:
        assert best.stats is not None
        best.notes.append(f"attempts ({best.stats.rate_unit} @ others' CPU): "
                          + ", ".join(f"{'abandoned' if t is None else f'{t:.1f}'} @ {s:.0%}"
                                      for t, s in attempts)
                          + "; kept the least disturbed")
    return best


def _measure_once(key: str, description: str, load: Load, stop: StopCheck | None,
                  summarize: Summarize) -> RunOutcome | None:
    meter = CpuMeter().start()
    result = load(stop)
    cpu = meter.finish()
    if result.abandoned:
        return None
    outcome = RunOutcome(key, description, summarize(result.records, result.wall_s),
                         others_cpu_share=cpu.others_share, cpu_s=cpu.by_role)
    stats = outcome.stats
    assert stats is not None
    progress(
        f"({key}) {stats.summary_line()}, others' CPU {outcome.others_cpu_share:.0%}; CPU s: "
        + ", ".join(f"{role} {seconds:.1f}" for role, seconds in outcome.cpu_s.items())
    )
    if stats.errors:
        outcome.notes.append(f"{stats.errors} requests failed, first: {stats.first_error}")
    return outcome
