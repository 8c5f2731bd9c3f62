"""What the gateway observes about the calls it forwards: in-memory counters only, so routing a
request costs a dictionary lookup and no database write."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram

from enginehouse.observability.traffic import TrafficHistory

# From a tiny model's short answer to a long stream on a large one.
_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


@dataclass(frozen=True)
class RouteLabels:
    """Who a forwarded call was for. Deployment and engine names are unique only within an
    organization, so the organization is part of every series."""

    organization: str
    engine: str
    deployment: str


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["organization", "engine", "deployment"]
        self.requests = Counter(
            "enginehouse_gateway_requests_total",
            "Calls the gateway routed to a deployment, by the HTTP status it answered.",
            [*labels, "code"], registry=registry,
        )
        self.latency = Histogram(
            "enginehouse_gateway_request_latency_seconds",
            "From the gateway receiving a routed call to its answer's end (a stream's last byte).",
            labels, buckets=_LATENCY_BUCKETS, registry=registry,
        )
        self.retries = Counter(
            "enginehouse_gateway_retries_total",
            "Calls sent to a second replica because the first failed before answering (it died, "
            "could not be reached or was shutting down).",
            labels, registry=registry,
        )
        # Each engine's last half hour, for the dashboard's chart.
        self.traffic = TrafficHistory()

    def retried(self, route: RouteLabels) -> None:
        self.retries.labels(route.organization, route.engine, route.deployment).inc()

    def start(self, route: RouteLabels, started: float, engine_id: str) -> RequestTimer:
        """``started`` is a ``time.perf_counter()`` reading taken when the call arrived."""
        return RequestTimer(self, route, started, engine_id)


@dataclass
class RequestTimer:
    """One routed call; ``finish`` records it once, however many paths try to."""

    metrics: GatewayMetrics
    route: RouteLabels
    started: float
    engine_id: str
    _done: bool = field(default=False, init=False)

    def finish(self, code: int) -> None:
        if self._done:
            return
        self._done = True
        route = self.route
        self.metrics.requests.labels(route.organization, route.engine, route.deployment, str(code)).inc()
        seconds = time.perf_counter() - self.started
        self.metrics.latency.labels(route.organization, route.engine, route.deployment).observe(seconds)
        self.metrics.traffic.record(self.engine_id, code, seconds)
