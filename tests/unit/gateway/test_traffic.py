"""The per-engine traffic history behind the dashboard's chart, on an injected clock."""

from __future__ import annotations

import pytest

from enginehouse.dashboard.charts import traffic_charts
from enginehouse.observability.traffic import TrafficHistory

T0 = 1_700_000_000  # a multiple of 10


def test_calls_land_in_their_bucket_and_the_window_is_zero_filled() -> None:
    history = TrafficHistory(bucket_s=10, window_s=60)
    history.record("engine-a", 200, 0.1, now=T0 + 1)
    history.record("engine-a", 200, 0.3, now=T0 + 9)
    history.record("engine-a", 503, 0.2, now=T0 + 25)
    history.record("engine-b", 200, 5.0, now=T0 + 25)
    series = history.series("engine-a", now=T0 + 29)
    assert [p.start for p in series] == [T0 - 30, T0 - 20, T0 - 10, T0, T0 + 10, T0 + 20]
    assert [p.calls_per_s for p in series] == [0, 0, 0, 0.2, 0, 0.1]
    assert [p.calls for p in series] == [0, 0, 0, 2, 0, 1]
    assert series[3].mean_latency_ms == pytest.approx(200) and series[4].mean_latency_ms is None
    assert [p.errors for p in series] == [0, 0, 0, 0, 0, 1]
    assert history.series("engine-c", now=T0)[-1].calls_per_s == 0


def test_buckets_older_than_the_window_are_dropped() -> None:
    history = TrafficHistory(bucket_s=10, window_s=30)
    for second in range(0, 100, 10):
        history.record("engine-a", 200, 0.01, now=T0 + second)
    series = history.series("engine-a", now=T0 + 95)
    assert [p.start for p in series] == [T0 + 70, T0 + 80, T0 + 90]
    assert all(p.calls_per_s == 0.1 for p in series)
    # Only the window's buckets are kept: however long an engine serves, its history stays this size.
    assert [b.start for b in history._engines["engine-a"]] == [T0 + 70, T0 + 80, T0 + 90]


def test_the_charts_say_in_words_what_they_draw() -> None:
    history = TrafficHistory(bucket_s=10, window_s=60)
    for latency in (0.1, 0.2, 0.3):
        history.record("engine-a", 200, latency, now=T0 + 55)
    history.record("engine-a", 502, 0.1, now=T0 + 35)
    rate, latency = traffic_charts(history.series("engine-a", now=T0 + 55), history.window_s)
    assert rate.summary == "4 calls in the last 60 seconds, 1 answered with a server error" and rate.peak == "0.30/s"
    assert latency.peak == "200 ms" and len(latency.points.split()) == 6
    quiet = traffic_charts(history.series("engine-b", now=T0), 1800)[0]
    assert quiet.summary == "0 calls in the last 30 minutes, 0 answered with a server error"
