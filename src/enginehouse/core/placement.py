"""``deployment_option: "auto"``: the smallest option that holds a replica's estimated memory.

An option fits when the estimate plus ``HEADROOM`` is at most the memory its model lives in
(all its GPUs together, or host memory for ``cpu``). Among the options that fit, those a provider
can give now come first; then the smallest memory; then the lowest hourly cost. So an engine runs
on what this installation has whenever the model fits there, and otherwise waits for the smallest
shape that would hold it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from enginehouse.core.options import GB, OptionOffer
from enginehouse.core.sizing import MemoryEstimate

# Room left on top of the estimate: allocator fragmentation, CUDA graphs, buffers the terms miss.
HEADROOM = 0.10


@dataclass(frozen=True)
class Placement:
    offer: OptionOffer
    estimate: MemoryEstimate
    reason: str


def needed_bytes(estimate: MemoryEstimate) -> int:
    return math.ceil(estimate.total_bytes * (1 + HEADROOM))


def gigabytes(count: int) -> str:
    return f"{count / GB:.1f} GB"


def describe(estimate: MemoryEstimate) -> str:
    """``33.9 GB (weights 16.1 GB, kv_cache 17.2 GB, …)``: the total and its non-zero terms."""
    terms = ", ".join(f"{name} {gigabytes(size)}" for name, size in estimate.terms.items() if size)
    return f"{gigabytes(estimate.total_bytes)} ({terms})"


def _order(offer: OptionOffer) -> tuple[bool, int, float]:
    return (not offer.available, offer.option.model_memory_bytes, offer.option.hourly_cost_usd[0])


def place(estimates: Mapping[str, MemoryEstimate], offers: Sequence[OptionOffer]) -> Placement | None:
    """The option ``auto`` picks, or None when none fits. ``estimates`` is keyed by option kind
    ("cpu", "gpu"): the serving dtype, and so the estimate, depends on the device."""
    fitting = [o for o in offers if needed_bytes(estimates[o.option.kind]) <= o.option.model_memory_bytes]
    if not fitting:
        return None
    chosen = min(fitting, key=_order)
    estimate = estimates[chosen.option.kind]
    reason = (
        f"estimated {describe(estimate)}; with {HEADROOM:.0%} headroom it needs "
        f"{gigabytes(needed_bytes(estimate))}, and {chosen.name} "
        f"({gigabytes(chosen.option.model_memory_bytes)}) is the smallest option that holds it"
    )
    if not chosen.available:
        reason += "; no option available on this installation holds it, so the engine waits for one"
    elif any(not o.available for o in fitting if _order(o)[1:] < _order(chosen)[1:]):
        reason += " among the options available now"
    return Placement(chosen, estimate, reason)


def no_fit_message(base_model: str, estimates: Mapping[str, MemoryEstimate],
                   offers: Sequence[OptionOffer]) -> str:
    """Why ``auto`` found nothing: the smallest estimate against the largest option."""
    smallest = min(estimates.values(), key=lambda e: e.total_bytes)
    largest = max(offers, key=lambda o: o.option.model_memory_bytes)
    return (
        f"base model {base_model!r} needs an estimated {describe(smallest)}, "
        f"{gigabytes(needed_bytes(smallest))} with {HEADROOM:.0%} headroom; the largest deployment "
        f"option, {largest.name}, has {gigabytes(largest.option.model_memory_bytes)}. Lower "
        "runtime_options (max_model_len, max_batch_size, max_loras, dtype) or choose a smaller model"
    )
