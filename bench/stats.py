"""From per-request records to the numbers a run reports: token streams (text generation) or
whole calls (embeddings, classification)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np

from bench.load import RequestRecord


class _Headline:
    """What every kind of run's stats offer: the headline rate (what ratios compare and attempts
    report), named by ``rate_key`` and shown in ``rate_unit``; the amount it counts (per-1,000
    CPU figures); and a dict for the JSON."""

    rate_key: ClassVar[str]
    rate_unit: ClassVar[str]
    counted_key: ClassVar[str]

    @property
    def rate(self) -> float:
        return float(getattr(self, self.rate_key))

    @property
    def counted(self) -> int:
        return int(getattr(self, self.counted_key))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]  # every subclass is a dataclass


@dataclass(frozen=True)
class RunStats(_Headline):
    requests: int
    errors: int
    output_tokens: int
    wall_s: float
    tokens_per_s: float
    ttft_p50_ms: float | None
    ttft_p99_ms: float | None
    # Gaps between consecutive text chunks, all requests pooled.
    itl_p50_ms: float | None
    # Per request: (last chunk − first chunk) / (tokens − 1); robust when a server sends several
    # tokens in one chunk, where chunk gaps alone would read as zero.
    tpot_p50_ms: float | None
    # Requests that ended before max_tokens (a server that cannot ignore EOS).
    early_stops: int
    # Requests whose token count came from the server's usage (the rest: one per text chunk).
    counted_from_usage: int
    first_error: str | None

    rate_key: ClassVar[str] = "tokens_per_s"
    rate_unit: ClassVar[str] = "tok/s"
    counted_key: ClassVar[str] = "output_tokens"

    def summary_line(self) -> str:
        return (f"{self.tokens_per_s:.1f} tok/s, TTFT p50 {self.ttft_p50_ms} ms p99 {self.ttft_p99_ms} ms, "
                f"ITL p50 {self.itl_p50_ms} ms, {self.requests} requests, {self.errors} errors")


@dataclass(frozen=True)
class CallStats(_Headline):
    """A run of non-streamed calls (embeddings, classification): how many went through per second
    and how long each took. Inputs/s is the headline: it compares requests of any batch size."""

    requests: int
    errors: int
    inputs: int
    wall_s: float
    requests_per_s: float
    inputs_per_s: float
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    first_error: str | None

    rate_key: ClassVar[str] = "inputs_per_s"
    rate_unit: ClassVar[str] = "inputs/s"
    counted_key: ClassVar[str] = "inputs"

    def summary_line(self) -> str:
        return (f"{self.requests_per_s:.1f} requests/s, {self.inputs_per_s:.1f} inputs/s, latency p50 "
                f"{self.latency_p50_ms} ms p99 {self.latency_p99_ms} ms, {self.requests} requests, "
                f"{self.errors} errors")


Stats = RunStats | CallStats


def percentile_ms(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return round(float(np.percentile(np.asarray(values), q)) * 1000.0, 2)


def summarize(records: list[RequestRecord], wall_s: float) -> RunStats:
    ok = [r for r in records if r.error is None and r.chunk_times]
    errors = [r for r in records if r.error is not None]
    tokens = sum(r.completion_tokens for r in ok)
    ttft = [r.chunk_times[0] - r.sent for r in ok]
    gaps = [b - a for r in ok for a, b in zip(r.chunk_times, r.chunk_times[1:])]
    tpot = [
        (r.chunk_times[-1] - r.chunk_times[0]) / (r.completion_tokens - 1)
        for r in ok
        if r.completion_tokens > 1
    ]
    return RunStats(
        requests=len(records),
        errors=len(errors),
        output_tokens=tokens,
        wall_s=round(wall_s, 3),
        tokens_per_s=round(tokens / wall_s, 2) if wall_s > 0 else 0.0,
        ttft_p50_ms=percentile_ms(ttft, 50),
        ttft_p99_ms=percentile_ms(ttft, 99),
        itl_p50_ms=percentile_ms(gaps, 50),
        tpot_p50_ms=percentile_ms(tpot, 50),
        early_stops=sum(1 for r in ok if r.finish_reason == "stop"),
        counted_from_usage=sum(1 for r in ok if r.tokens_from_usage),
        first_error=errors[0].error if errors else None,
    )


def summarize_calls(records: list[RequestRecord], wall_s: float) -> CallStats:
    ok = [r for r in records if r.error is None]
    errors = [r for r in records if r.error is not None]
    inputs = sum(r.inputs for r in ok)
    latencies = [r.done - r.sent for r in ok]
    return CallStats(
        requests=len(records),
        errors=len(errors),
        inputs=inputs,
        wall_s=round(wall_s, 3),
        requests_per_s=round(len(ok) / wall_s, 2) if wall_s > 0 else 0.0,
        inputs_per_s=round(inputs / wall_s, 2) if wall_s > 0 else 0.0,
        latency_p50_ms=percentile_ms(latencies, 50),
        latency_p99_ms=percentile_ms(latencies, 99),
        first_error=errors[0].error if errors else None,
    )
