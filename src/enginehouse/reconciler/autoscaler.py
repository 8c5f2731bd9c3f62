"""How many replicas a cluster engine should run for its load: a pure decision, unit-tested.

Each call looks at one ``LoadSample`` and says how many replicas the load wishes for,
``ceil(metric / target)`` within ``[min_replicas, max_replicas]``, where the metric is the engine's
in-flight calls averaged over the load meter's window (``concurrency``) or its calls per second
(``qps``). The replica count follows that wish with two delays, as Knative and SkyPilot do:

- **up** once the wish for more than now has held on every call for ``upscale_delay_s``
  (0: at once), to what the load wishes at that moment;
- **down** once every wish of the last ``downscale_delay_s`` was for fewer than now, to the most
  any of them wished, so a short lull never drops capacity a returning load needs; and never within
  ``downscale_delay_s`` of the last step up, so the count does not flap.

A wish holds from the call that made it to the next call. ``min_replicas`` and ``max_replicas``
apply at once, and what the provider can give caps the result (never below one replica).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from enginehouse.core.specs import Autoscaling
from enginehouse.gateway.load import LoadSample

# A metric a rounding error over a multiple of the target (20.000000001 over 10) wishes for 2.
_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Decision:
    desired: int  # the replicas the engine should run
    reason: str  # in words, starting with the metric against its target
    at: float  # the clock value the decision was made at
    changed: bool  # desired differs from the count before
    capped: bool = False  # the provider cannot give what the load wants: desired is its bound


@dataclass(frozen=True)
class Wish:
    """A replica count the load wished for, held from one call until ``until`` (the next call;
    None while it is the latest)."""

    replicas: int
    until: float | None = None


@dataclass(frozen=True)
class AutoscalerState:
    """What one engine's autoscaler remembers between calls; a fresh one to start with."""

    # When the wish for more replicas than the engine runs began (None: it wishes no more).
    more_since: float | None = None
    # The wishes of the last downscale delay that bound a step down: each more than every later
    # one (a smaller earlier wish can never be the most), so at most max_replicas of them.
    recent: tuple[Wish, ...] = ()
    last_scale_up_at: float | None = None


def decide(
    config: Autoscaling,
    state: AutoscalerState,
    sample: LoadSample,
    ready_replicas: int,
    current_desired: int,
    capacity_limit: int | None,
    now: float,
) -> tuple[Decision, AutoscalerState]:
    """The replicas ``current_desired`` should become for ``sample``, and the state to pass next."""
    value = sample.average_in_flight if config.metric == "concurrency" else sample.qps
    wanted = math.ceil(max(0.0, value / config.target - _TOLERANCE))
    wished = min(max(wanted, config.min_replicas), config.max_replicas)
    # Before its first call the engine is taken to have wished for what it runs: a new or
    # restarted autoscaler waits a whole downscale delay before stepping down.
    recent = _remember(state.recent or (Wish(current_desired),), wished, now, config.downscale_delay_s)
    more_since = (now if state.more_since is None else state.more_since) if wished > current_desired else None
    state = replace(state, recent=recent, more_since=more_since)

    desired, why = _follow(config, state, wished, current_desired, now)
    desired, capped = _cap(desired, capacity_limit)
    if desired > current_desired:
        state = replace(state, last_scale_up_at=now)
    step = f"{'up' if desired > current_desired else 'down'} from {current_desired} to {desired}"
    if capped is not None:  # what the delays allowed is beyond reach: say so rather than why
        step = step if desired != current_desired else f"staying at {desired}"
        why = f"{step}: wants {capped} replicas, the provider can give {desired}"
    elif desired != current_desired:
        why = f"{step}{why}"
    if ready_replicas != current_desired:
        why += f" ({ready_replicas} of {current_desired} ready)"
    reason = f"{config.metric} {value:.1f} over target {config.target:g} per replica: {_wish(wanted, wished)}"
    return Decision(desired, f"{reason}; {why}", now, desired != current_desired, capped is not None), state


def _follow(config: Autoscaling, state: AutoscalerState, wished: int, current: int, now: float) -> tuple[int, str]:
    """(the count the delays allow, why: the tail of a step's sentence, or why there is none)."""
    if current < config.min_replicas:
        return config.min_replicas, " (min_replicas)"
    if current > config.max_replicas:
        return config.max_replicas, " (max_replicas)"
    if state.more_since is not None:
        held = now - state.more_since
        if held >= config.upscale_delay_s:
            return wished, ""
        return current, (f"staying at {current} until more is wished for {_s(config.upscale_delay_s)} "
                         f"(so far {_s(held)})")
    most = state.recent[0].replicas  # the most wished over the downscale delay
    if most >= current:
        if wished < current:
            return current, f"staying at {current}: {most} wished within the last {_s(config.downscale_delay_s)}"
        return current, f"staying at {current}"
    since_up = None if state.last_scale_up_at is None else now - state.last_scale_up_at
    if since_up is not None and since_up < config.downscale_delay_s:
        return current, (f"staying at {current}: scaled up {_s(since_up)} ago, within the "
                         f"{_s(config.downscale_delay_s)} downscale delay")
    return most, f", the most wished in the last {_s(config.downscale_delay_s)}"


def _remember(recent: tuple[Wish, ...], wished: int, now: float, window_s: float) -> tuple[Wish, ...]:
    """``recent`` with ``wished`` made now: the latest wish ends here, wishes no greater than the
    new one can no longer be the most, and those that ended before the window are gone."""
    latest = replace(recent[-1], until=now) if recent[-1].until is None else recent[-1]
    kept = [wish for wish in (*recent[:-1], latest) if wish.replicas > wished]
    kept.append(Wish(wished))
    return tuple(wish for wish in kept if wish.until is None or wish.until > now - window_s)


def _cap(desired: int, capacity_limit: int | None) -> tuple[int, int | None]:
    """(``desired`` within what the provider can give, the count it wanted when capped)."""
    if capacity_limit is None or desired <= max(capacity_limit, 1):
        return desired, None
    return max(capacity_limit, 1), desired


def _wish(wanted: int, wished: int) -> str:
    if wanted < wished:
        return f"{wanted} replicas, at least {wished} (min_replicas)"
    if wanted > wished:
        return f"{wanted} replicas, at most {wished} (max_replicas)"
    return f"{wished} replica{'' if wished == 1 else 's'}"


def _s(seconds: float) -> str:
    return f"{round(seconds, 1):g} s"
