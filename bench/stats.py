"""From per-request records to the numbers a run reports."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from bench.load import RequestRecord


@dataclass(frozen=True)
class RunStats:
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

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


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
