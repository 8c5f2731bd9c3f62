"""A target: a ratio (or figure) within one run against its goal, reported with pass or miss and
never asserted; and the run rates the ratios are taken from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.runs import RunOutcome


@dataclass(frozen=True)
class Target:
    name: str
    what: str
    value: float | None
    goal: float | None  # None: reported, with no goal
    at_least: bool  # True: value ≥ goal passes; False: value ≤ goal passes
    unit: str = ""

    @property
    def passed(self) -> bool | None:
        if self.value is None or self.goal is None:
            return None
        return self.value >= self.goal if self.at_least else self.value <= self.goal

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "what": self.what, "value": self.value, "goal": self.goal,
                "comparison": ">=" if self.at_least else "<=", "passed": self.passed}


def rate(runs: dict[str, RunOutcome], key: str) -> float | None:
    """A run's rate; for (a), the mean of the (a) runs before and after (b) when both ran."""
    if key == "a":
        rates = [runs[k].rate for k in ("a", "a_after") if k in runs and runs[k].rate is not None]
        return sum(rates) / len(rates) if rates else None  # type: ignore[arg-type]
    return runs[key].rate if key in runs else None


def ratio(runs: dict[str, RunOutcome], top: str, bottom: str) -> float | None:
    a, b = rate(runs, top), rate(runs, bottom)
    return round(a / b, 3) if a is not None and b else None
