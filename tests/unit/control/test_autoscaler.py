"""The autoscaler's decisions with plain numbers: a load, a clock value, the count it runs."""

from __future__ import annotations

from typing import Any

from enginehouse.core.specs import Autoscaling
from enginehouse.gateway.load import LoadSample
from enginehouse.reconciler.autoscaler import AutoscalerState, Decision, decide


def load(concurrency: float = 0.0, qps: float = 0.0) -> LoadSample:
    return LoadSample(in_flight=round(concurrency), average_in_flight=concurrency, qps=qps, window_s=30.0)


class Engine:
    """An engine that runs what the autoscaler decides, at once (every replica ready)."""

    def __init__(self, replicas: int = 1, capacity: int | None = None, **config: Any) -> None:
        self.config = Autoscaling(**config)
        self.state = AutoscalerState()
        self.replicas = replicas
        self.capacity = capacity

    def at(self, now: float, concurrency: float = 0.0, qps: float = 0.0) -> Decision:
        decision, self.state = decide(self.config, self.state, load(concurrency, qps), self.replicas,
                                      self.replicas, self.capacity, now)
        self.replicas = decision.desired
        return decision

    def over(self, start: float, end: float, concurrency: float = 0.0, every: float = 1.0) -> list[int]:
        """The counts decided once a second (``every``) from ``start`` to ``end``, both included."""
        counts = []
        now = start
        while now <= end:
            counts.append(self.at(now, concurrency).desired)
            now += every
        return counts


def test_the_wish_is_the_metric_over_the_target_rounded_up() -> None:
    engine = Engine(max_replicas=5, upscale_delay_s=0)
    decision = engine.at(0.0, concurrency=23.5)
    assert decision == Decision(3, "concurrency 23.5 over target 10 per replica: 3 replicas; up from 1 to 3",
                                0.0, True)
    assert Engine(max_replicas=5, upscale_delay_s=0).at(0.0, concurrency=20.000000001).desired == 2


def test_a_step_up_waits_for_the_wish_to_hold_over_the_upscale_delay() -> None:
    engine = Engine(upscale_delay_s=10)
    assert engine.over(0, 9, concurrency=25) == [1] * 10
    assert "staying at 1 until more is wished for 10 s (so far 9.5 s)" in engine.at(9.5, concurrency=25).reason
    decision = engine.at(10, concurrency=25)
    assert (decision.desired, decision.changed, decision.at) == (3, True, 10)
    assert engine.at(11, concurrency=25).changed is False


def test_a_load_that_drops_before_the_delay_ends_scales_nothing() -> None:
    engine = Engine(upscale_delay_s=10)
    assert engine.over(0, 8, concurrency=25) == [1] * 9
    assert engine.at(9, concurrency=5).desired == 1  # the wish for more is broken ...
    assert engine.over(10, 19, concurrency=25) == [1] * 10  # ... and its delay starts again
    assert engine.at(20, concurrency=25).desired == 3


def test_an_upscale_delay_of_zero_scales_at_once() -> None:
    engine = Engine(upscale_delay_s=0)
    assert engine.at(0, concurrency=15).desired == 2


def test_a_step_up_goes_to_what_the_load_wishes_when_the_delay_ends() -> None:
    engine = Engine(max_replicas=8, upscale_delay_s=10)
    engine.over(0, 9, concurrency=25)
    assert engine.at(10, concurrency=45).desired == 5


def test_a_step_down_waits_for_the_downscale_delay_and_goes_to_the_most_wished_in_it() -> None:
    engine = Engine(replicas=3, upscale_delay_s=0, downscale_delay_s=300)
    engine.at(0, concurrency=30)
    assert engine.over(1, 100, concurrency=0) == [3] * 100
    assert engine.over(101, 150, concurrency=15) == [3] * 50  # 2 wished once, briefly
    assert engine.over(151, 300, concurrency=0) == [3] * 150
    decision = engine.at(301, concurrency=0)  # 3 was last wished at 0, until 1: 300 s ago
    assert decision.desired == 2 and decision.changed
    assert decision.reason == ("concurrency 0.0 over target 10 per replica: 0 replicas, at least 1 "
                               "(min_replicas); down from 3 to 2, the most wished in the last 300 s")
    assert engine.over(302, 450, concurrency=0) == [2] * 149  # 2 was wished until 151
    assert engine.at(451, concurrency=0).desired == 1


def test_a_brief_dip_never_drops_capacity() -> None:
    engine = Engine(replicas=3, downscale_delay_s=300)
    for minute in range(20):
        engine.over(minute * 60, minute * 60 + 49, concurrency=30)
        assert engine.over(minute * 60 + 50, minute * 60 + 59, concurrency=0) == [3] * 10
    assert "staying at 3: 3 wished within the last 300 s" in engine.at(1200, concurrency=0).reason


def test_a_new_autoscaler_waits_a_whole_downscale_delay_before_stepping_down() -> None:
    engine = Engine(replicas=3, downscale_delay_s=300)
    assert engine.over(0, 299, concurrency=0) == [3] * 300
    assert engine.at(300, concurrency=0).desired == 1


def test_no_step_down_within_the_downscale_delay_of_a_step_up() -> None:
    engine = Engine(replicas=3, downscale_delay_s=300)
    engine.state = AutoscalerState(last_scale_up_at=250)  # scaled up before this autoscaler's wishes
    assert engine.over(0, 549, concurrency=0, every=50) == [3] * 11
    assert "scaled up 250 s ago, within the 300 s downscale delay" in engine.at(500, concurrency=0).reason
    assert engine.at(550, concurrency=0).desired == 1


def test_up_then_down_then_up_again() -> None:
    engine = Engine(upscale_delay_s=10, downscale_delay_s=60)
    assert engine.over(0, 10, concurrency=25)[-1] == 3
    assert engine.over(11, 70, concurrency=0) == [3] * 60
    assert engine.at(71, concurrency=0).desired == 1  # 3 wished until 11: 60 s ago
    assert engine.over(72, 82, concurrency=12)[-1] == 2


def test_min_and_max_clamp_the_wish() -> None:
    engine = Engine(min_replicas=2, max_replicas=4, upscale_delay_s=0)
    decision = engine.at(0, concurrency=0)
    assert decision.desired == 2 and "0 replicas, at least 2 (min_replicas)" in decision.reason
    decision = engine.at(1, concurrency=95)
    assert decision.desired == 4 and "10 replicas, at most 4 (max_replicas)" in decision.reason


def test_a_count_outside_min_and_max_is_brought_inside_at_once() -> None:
    assert Engine(replicas=5, max_replicas=3).at(0, concurrency=50).desired == 3
    decision = Engine(replicas=1, min_replicas=2, max_replicas=3, upscale_delay_s=60).at(0)
    assert decision.desired == 2 and decision.reason.endswith("up from 1 to 2 (min_replicas)")


def test_a_zero_load_engine_sits_at_min() -> None:
    engine = Engine(min_replicas=1, upscale_delay_s=0, downscale_delay_s=0)
    assert engine.over(0, 100, concurrency=0, every=10) == [1] * 11
    assert engine.at(101).reason == "concurrency 0.0 over target 10 per replica: 0 replicas, at least 1 " \
                                    "(min_replicas); staying at 1"


def test_what_the_provider_can_give_caps_the_count_and_the_reason_says_so() -> None:
    engine = Engine(max_replicas=5, upscale_delay_s=0, capacity=2)
    decision = engine.at(0, concurrency=40)
    assert decision.desired == 2 and decision.reason.endswith(
        "4 replicas; up from 1 to 2: wants 4 replicas, the provider can give 2")
    decision = engine.at(1, concurrency=40)
    assert (decision.desired, decision.changed) == (2, False)
    assert decision.reason.endswith("staying at 2: wants 4 replicas, the provider can give 2")
    engine.capacity = None  # room again: the wish has held all along
    assert engine.at(2, concurrency=40).desired == 4


def test_the_provider_cap_never_asks_for_no_replica() -> None:
    assert Engine(replicas=2, capacity=0).at(0, concurrency=20).desired == 1


def test_the_qps_metric_wishes_by_calls_per_second() -> None:
    engine = Engine(metric="qps", target=5, max_replicas=4, upscale_delay_s=0)
    decision = engine.at(0, concurrency=100, qps=12)
    assert decision.desired == 3
    assert decision.reason == "qps 12.0 over target 5 per replica: 3 replicas; up from 1 to 3"


def test_replicas_not_yet_ready_are_named_in_the_reason() -> None:
    config = Autoscaling(upscale_delay_s=0)
    decision, _ = decide(config, AutoscalerState(), load(25), 1, 2, None, 0.0)
    assert decision.desired == 3 and decision.reason.endswith("up from 2 to 3 (1 of 2 ready)")


def test_the_state_stays_small_however_long_it_runs() -> None:
    engine = Engine(max_replicas=8, upscale_delay_s=0, downscale_delay_s=300)
    for second in range(2000):
        engine.at(second, concurrency=(second * 37) % 80)
    assert len(engine.state.recent) <= 8
