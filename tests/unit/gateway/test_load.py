"""The load meter, with a clock the test moves: calls in flight now, averaged over time, and
arriving per second, per engine."""

from __future__ import annotations

import threading

import pytest

from enginehouse.gateway.load import LoadMeter, LoadSample


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def meter(window_s: float = 10.0) -> tuple[LoadMeter, Clock]:
    clock = Clock()
    return LoadMeter(window_s=window_s, bucket_s=1.0, clock=clock), clock


def test_an_engine_never_seen_has_no_load() -> None:
    load, clock = meter()
    assert load.sample("nobody", clock.now) == LoadSample(0, 0.0, 0.0, 10.0)


def test_the_average_is_the_in_flight_level_over_time() -> None:
    load, clock = meter()
    load.started("e")  # 1000.0: one call ...
    clock.now = 1002.5
    load.started("e")  # ... two from 1002.5 ...
    clock.now = 1005.0
    load.finished("e")  # ... one again from 1005.0 to 1010.0
    sample = load.sample("e", 1010.0)
    assert sample.in_flight == 1
    assert sample.window_s == pytest.approx(10.0)
    assert sample.average_in_flight == pytest.approx((2.5 * 1 + 2.5 * 2 + 5 * 1) / 10)


def test_many_short_calls_weigh_by_how_long_they_ran() -> None:
    load, clock = meter()
    for second in range(10):
        clock.now = 1000.0 + second
        load.started("e")
        clock.now += 0.1
        load.finished("e")
    sample = load.sample("e", 1010.0)
    assert sample.in_flight == 0
    assert sample.average_in_flight == pytest.approx(0.1)  # ten calls of 0.1 s in 10 s


def test_qps_counts_arrivals_over_the_window() -> None:
    load, clock = meter()
    for tenth in range(50):  # 5 calls a second for 5 s
        clock.now = 1005.0 + tenth / 10
        load.arrived("e")
    assert load.sample("e", 1010.0).qps == pytest.approx(50 / 10)


def test_load_older_than_the_window_is_forgotten() -> None:
    load, clock = meter()
    for _ in range(20):
        load.arrived("e")
        load.started("e")
    clock.now = 1003.0
    for _ in range(20):
        load.finished("e")
    assert load.sample("e", 1010.0).average_in_flight == pytest.approx(20 * 3 / 10)
    later = load.sample("e", 1013.5)
    assert later == LoadSample(0, 0.0, 0.0, pytest.approx(9.5))  # type: ignore[arg-type]


def test_a_level_held_longer_than_the_window_averages_to_itself() -> None:
    load, clock = meter()
    for _ in range(3):
        load.started("e")
    assert load.sample("e", 1000.0 + 3600.0).average_in_flight == pytest.approx(3.0)
    assert load.sample("e", 1000.0 + 3600.5).average_in_flight == pytest.approx(3.0)


def test_the_window_runs_to_the_sample_without_a_call_since() -> None:
    load, clock = meter()
    load.started("e")
    clock.now = 1001.0
    load.finished("e")
    assert load.sample("e", 1005.0).average_in_flight == pytest.approx(1 / 10)
    assert load.sample("e", 1010.999).average_in_flight == pytest.approx(0.0)  # the bucket 1000 is out


def test_engines_are_counted_apart_and_finishing_never_goes_below_zero() -> None:
    load, clock = meter()
    load.started("a")
    load.finished("b")
    load.finished("b")
    clock.now = 1010.0
    assert load.sample("a").in_flight == 1 and load.sample("a").average_in_flight == pytest.approx(1.0)
    assert load.sample("b") == LoadSample(0, 0.0, 0.0, pytest.approx(10.0))  # type: ignore[arg-type]


def test_a_sample_a_moment_older_than_the_last_call_reads_as_of_that_call() -> None:
    load, clock = meter()
    clock.now = 1005.0
    load.started("e")
    assert load.sample("e", 1004.9).in_flight == 1  # the reconciler read its clock just before


def test_calls_from_several_threads_all_return_to_zero() -> None:
    load = LoadMeter(window_s=5.0)  # the real clock
    start = threading.Barrier(4)

    def calls(engine_id: str) -> None:
        start.wait()
        for _ in range(2000):
            load.arrived(engine_id)
            load.started(engine_id)
            load.sample(engine_id)
            load.finished(engine_id)

    threads = [threading.Thread(target=calls, args=(f"e{i % 2}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for engine_id in ("e0", "e1"):
        sample = load.sample(engine_id)
        assert sample.in_flight == 0
        assert sample.qps * sample.window_s == pytest.approx(4000)  # every arrival counted, once
