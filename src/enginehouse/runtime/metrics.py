"""A replica's Prometheus metrics, served at ``GET /metrics`` and federated by the server.

Every replica has a registry of its own: the global default registry would mix the series of
every app a process builds (tests build several). Per-deployment series are labelled
``deployment`` (an adapter's name, or the served name for the base model); the server adds
``engine``, ``replica`` and ``organization`` when it re-exposes them.

Requests are observed once each, when they end, from timestamps taken along the way: nothing
here runs per token. A "request" is one API call (a completion with several prompts or ``n``
choices is one request); ``status`` is ``ok`` (every choice finished), ``error`` (the engine failed
it) or ``aborted`` (the client left first). Calls refused before generation (invalid body, unknown
model, prompt too long) are not counted here; the gateway's code label counts those.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

STATUS_OK = "ok"
STATUS_ERROR = "error"
STATUS_ABORTED = "aborted"

# Bucket bounds span a tiny model on a CPU (milliseconds) to a large one under load (minutes).
_TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 0.75, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0)
_TPOT_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.04, 0.06, 0.1, 0.15, 0.25, 0.5, 1.0, 2.0, 5.0)
_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0)
_QUEUE_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


@dataclass(frozen=True)
class ReplicaLoad:
    """What the replica holds right now; read at scrape time."""

    running: int = 0  # sequences (choices) in the running batch
    waiting: int = 0  # requests (prompts) not admitted yet
    device_adapters: int = 0  # adapters in a fast-path slot
    host_adapters: int = 0  # adapters whose weights are in host memory


@dataclass(frozen=True)
class RequestRecord:
    """One finished request. Times are ``time.monotonic()`` readings; None where the request
    never got that far (aborted while queued, failed before its first token)."""

    deployment: str
    status: str
    prompt_tokens: int
    generation_tokens: int
    arrival: float
    finished: float
    admitted: float | None = None
    first_token: float | None = None
    # Tokens of the longest choice: the number of decode steps the request took.
    longest_choice: int = 0


# Engine step timers as ``name → value``: counts (``steps``, ``decode_steps``, …) and seconds per
# phase (every other name); None where the runner has no engine that keeps them.
StepReport = Callable[[], dict[str, float] | None]
# The counts among a step report's names; the rest are seconds.
_STEP_COUNTS = ("steps", "decode_steps", "prefills", "decode_rows")


class ReplicaMetrics:
    def __init__(self, load: Callable[[], ReplicaLoad], steps: StepReport = lambda: None) -> None:
        self.registry = CollectorRegistry()
        labels = ["deployment"]
        self.requests = Counter(
            "enginehouse_requests_total", "Requests that reached the engine, by how they ended (ok, error, aborted).",
            [*labels, "status"], registry=self.registry,
        )
        self.prompt_tokens = Counter(
            "enginehouse_prompt_tokens_total", "Prompt tokens prefilled.", labels, registry=self.registry
        )
        self.generation_tokens = Counter(
            "enginehouse_generation_tokens_total", "Tokens generated (all choices).", labels, registry=self.registry
        )
        self.time_to_first_token = Histogram(
            "enginehouse_time_to_first_token_seconds", "Arrival to the first generated token.",
            labels, buckets=_TTFT_BUCKETS, registry=self.registry,
        )
        self.time_per_output_token = Histogram(
            "enginehouse_time_per_output_token_seconds",
            "Mean time between generated tokens after the first, per completed request.",
            labels, buckets=_TPOT_BUCKETS, registry=self.registry,
        )
        self.e2e_latency = Histogram(
            "enginehouse_e2e_request_latency_seconds", "Arrival to the last token, per completed request.",
            labels, buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.queue_time = Histogram(
            "enginehouse_request_queue_time_seconds", "Arrival to admission into the running batch.",
            labels, buckets=_QUEUE_BUCKETS, registry=self.registry,
        )
        self.registry.register(_LoadCollector(load))
        self.registry.register(_StepCollector(steps))

    def record(self, request: RequestRecord) -> None:
        name = request.deployment
        self.requests.labels(name, request.status).inc()
        self.generation_tokens.labels(name).inc(request.generation_tokens)
        if request.admitted is not None:
            # Only an admitted request had its prompt prefilled.
            self.prompt_tokens.labels(name).inc(request.prompt_tokens)
            self.queue_time.labels(name).observe(request.admitted - request.arrival)
        if request.first_token is not None:
            self.time_to_first_token.labels(name).observe(request.first_token - request.arrival)
        if request.status != STATUS_OK:
            return  # a cut-short request's latency says nothing about serving speed
        self.e2e_latency.labels(name).observe(request.finished - request.arrival)
        if request.first_token is not None and request.longest_choice > 1:
            decode_time = request.finished - request.first_token
            self.time_per_output_token.labels(name).observe(decode_time / (request.longest_choice - 1))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _LoadCollector:
    """Gauges computed when scraped, so serving never pays to keep them current."""

    def __init__(self, load: Callable[[], ReplicaLoad]) -> None:
        self._load = load

    def collect(self) -> Iterable[Metric]:
        load = self._load()
        yield GaugeMetricFamily(
            "enginehouse_num_requests_running", "Sequences (choices) in the running batch.", value=load.running
        )
        yield GaugeMetricFamily(
            "enginehouse_num_requests_waiting", "Requests waiting for admission into the batch.", value=load.waiting
        )
        tiers = GaugeMetricFamily(
            "enginehouse_resident_adapters",
            "Loaded adapters resident per tier: device (a fast-path slot), host (host memory); tiers overlap.",
            labels=["tier"],
        )
        tiers.add_metric(["device"], load.device_adapters)
        tiers.add_metric(["host"], load.host_adapters)
        yield tiers


class _StepCollector:
    """The engine's step timers as counters, built when scraped: the engine only adds floats.
    A reader takes two scrapes and divides a phase's seconds by the decode steps between them."""

    def __init__(self, steps: StepReport) -> None:
        self._steps = steps

    def collect(self) -> Iterable[Metric]:
        report = self._steps()
        if report is None:
            return
        counts = CounterMetricFamily(
            "enginehouse_engine_steps",
            "Engine steps that did work (steps), decode steps, prefills, and rows summed over decode steps.",
            labels=["kind"],
        )
        seconds = CounterMetricFamily(
            "enginehouse_engine_phase_seconds",
            "Engine thread time by phase (step: whole steps; forward, lora, sampling, detokenize, emit: parts "
            "of them), and the event loop's encoding of stream chunks (encode).",
            labels=["phase"],
        )
        for name, value in report.items():
            (counts if name in _STEP_COUNTS else seconds).add_metric([name], value)
        yield counts
        yield seconds
