"""The engine page's traffic chart: calls per second and mean latency over the last half hour,
as two small inline SVG line charts (no script, no library; readable without colour: each chart
has its title, its scale and a text summary)."""

from __future__ import annotations

from dataclasses import dataclass

from enginehouse.observability.traffic import TrafficPoint

WIDTH, HEIGHT = 360, 80


@dataclass(frozen=True)
class Chart:
    title: str
    peak: str  # the top of the scale, in words
    points: str  # the polyline's "x,y x,y …"
    summary: str


def traffic_charts(series: list[TrafficPoint], window_s: int) -> list[Chart]:
    rates = [p.calls_per_s for p in series]
    latencies = [p.mean_latency_ms for p in series]
    served = [v for v in latencies if v is not None]
    calls, errors = sum(p.calls for p in series), sum(p.errors for p in series)
    return [
        Chart("Calls per second", f"{max(rates, default=0):.2f}/s", _polyline(rates),
              f"{calls} calls in the last {window_words(window_s)}, {errors} answered with a server error"),
        Chart("Mean latency", f"{max(served, default=0):.0f} ms", _polyline(latencies),
              f"median of the buckets with calls: {_median(served):.0f} ms" if served else "no calls"),
    ]


def window_words(window_s: int) -> str:
    return f"{window_s // 60} minutes" if window_s >= 120 else f"{window_s} seconds"


def _polyline(values: list[float | None]) -> str:
    top = max((v for v in values if v is not None), default=0) or 1
    step = WIDTH / max(len(values) - 1, 1)
    # A bucket without calls has no latency: drawn at the bottom rather than leaving a gap.
    return " ".join(f"{i * step:.1f},{HEIGHT - (v or 0) / top * (HEIGHT - 4):.1f}" for i, v in enumerate(values))


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
