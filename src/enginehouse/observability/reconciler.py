"""What the reconciler observes about its own work: how many engine steps it ran, and why.

An operator reads from these whether the server works in proportion to what changes: an idle
server's step count stands still, and one change adds one step for the engine it touched.
"""

from __future__ import annotations

from enum import Enum

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_STEP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class StepCause(str, Enum):
    CHANGE = "change"  # a commit changed the engine (an API write, a waking request)
    TIMER = "timer"  # its last step asked to be stepped again (health checks, a schedule)
    RESYNC = "resync"  # the periodic pass over every engine not at rest


class ReconcilerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry
        self.steps = Counter(
            "enginehouse_reconciler_steps_total",
            "Engine steps the reconciler ran, by what called for each.",
            ["cause"], registry=registry,
        )
        self.step_seconds = Histogram(
            "enginehouse_reconciler_step_seconds",
            "How long one engine step took (adapter loads and replica launches included).",
            buckets=_STEP_BUCKETS, registry=registry,
        )
        # Of the servers sharing one database, the one whose reconciler runs shows 1.
        self.leader = Gauge(
            "enginehouse_reconciler_leader",
            "1 while this server leads (runs the reconciler and the training supervisor), else 0.",
            registry=registry,
        )
        for cause in StepCause:  # every series shown from the start, at zero
            self.steps.labels(cause.value)

    def stepped(self, cause: StepCause, seconds: float) -> None:
        self.steps.labels(cause.value).inc()
        self.step_seconds.observe(seconds)

    def steps_run(self) -> int:
        """Steps run so far, whatever their cause."""
        return int(sum(self._registry.get_sample_value("enginehouse_reconciler_steps_total",
                                                       {"cause": cause.value}) or 0
                       for cause in StepCause))
