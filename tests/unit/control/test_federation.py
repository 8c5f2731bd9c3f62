"""Re-exposing replicas' series: merged by family, each sample labelled with its replica, and the
result a valid exposition whatever the replicas sent."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.metrics_core import Metric

from enginehouse.core.status import ReplicaStatus
from enginehouse.observability.federation import ReplicaPage, merge
from enginehouse.observability.inventory import Inventory, ReplicaRow, replica_counts
from enginehouse.observability.router import render
from enginehouse.runtime.metrics import ReplicaLoad, ReplicaMetrics, RequestRecord
from tests.prometheus import Scrape


def _replica_text(requests: int, tokens: int) -> str:
    metrics = ReplicaMetrics(lambda: ReplicaLoad(running=1, waiting=2, device_adapters=1, host_adapters=3))
    for _ in range(requests):
        metrics.record(RequestRecord(
            deployment="ft", status="ok", prompt_tokens=5, generation_tokens=tokens, arrival=0.0,
            admitted=0.1, first_token=0.2, finished=1.0, longest_choice=tokens,
        ))
    return metrics.render().decode()


def _row(replica: str, engine: str = "demo", status: str = "ready", organization: str = "default") -> ReplicaRow:
    return ReplicaRow(replica, status, f"http://127.0.0.1:1/{replica}", organization, engine)


def _page(row: ReplicaRow, text: str) -> ReplicaPage:
    return ReplicaPage(row.labels, text)


def test_two_replicas_stay_apart_and_add_up() -> None:
    pages = [_page(_row("r1"), _replica_text(2, 4)), _page(_row("r2"), _replica_text(1, 3))]
    scraped = Scrape.parse(render(CollectorRegistry(), Inventory([], []), pages).decode())
    assert scraped.types["enginehouse_requests"] == "counter"
    assert scraped.types["enginehouse_e2e_request_latency_seconds"] == "histogram"
    assert scraped.value("enginehouse_requests_total", engine="demo", deployment="ft", replica="r1") == 2
    assert scraped.value("enginehouse_requests_total", engine="demo", deployment="ft") == 3
    assert scraped.value("enginehouse_generation_tokens_total", deployment="ft", organization="default") == 11
    assert scraped.value("enginehouse_time_to_first_token_seconds_count", replica="r2") == 1
    assert scraped.value("enginehouse_time_to_first_token_seconds_bucket", replica="r1", le="+Inf") == 2
    assert scraped.value("enginehouse_resident_adapters", tier="host") == 6
    assert scraped.value("enginehouse_num_requests_waiting", engine="demo") == 4
    assert {labels["replica"] for labels, _ in scraped.matching("enginehouse_num_requests_running")} == {"r1", "r2"}


def test_bad_pages_and_clashing_names_are_left_out() -> None:
    own = CollectorRegistry()
    Counter("enginehouse_gateway_requests_total", "server's own", registry=own).inc()
    clash = "# TYPE enginehouse_gateway_requests_total counter\nenginehouse_gateway_requests_total 99\n"
    retyped = "# TYPE enginehouse_num_requests_running_total counter\nenginehouse_num_requests_running_total 5\n"
    pages = [
        _page(_row("good"), _replica_text(1, 2)),
        _page(_row("html"), "<html>not metrics</html>"),
        _page(_row("clash"), clash),
        _page(_row("retyped"), retyped),
    ]
    scraped = Scrape.parse(render(own, Inventory([], []), pages).decode())
    assert scraped.value("enginehouse_gateway_requests_total") == 1  # the server's, not the replica's 99
    assert scraped.types["enginehouse_num_requests_running"] == "gauge"
    assert not scraped.matching("enginehouse_num_requests_running_total")
    assert {labels.get("replica") for _, labels, _ in scraped.samples if "replica" in labels} == {"good"}


def test_replica_counts_cover_every_engine_and_status() -> None:
    inventory = Inventory(
        engines=[("default", "demo"), ("default", "idle"), ("other", "demo")],
        replicas=[_row("r1"), _row("r2", status="starting"), _row("r3", organization="other")],
    )
    assert [r.id for r in inventory.ready()] == ["r1", "r3"]
    registry = CollectorRegistry()
    registry.register(_Fixed(replica_counts(inventory)))
    scraped = Scrape.parse(generate_latest(registry).decode())
    # The same engine name in two organizations: two series, not one counted twice.
    assert scraped.value("enginehouse_engine_replicas", organization="default", engine="demo", status="ready") == 1
    assert scraped.value("enginehouse_engine_replicas", organization="default", engine="demo", status="starting") == 1
    assert scraped.value("enginehouse_engine_replicas", organization="other", engine="demo", status="ready") == 1
    assert scraped.value("enginehouse_engine_replicas", engine="idle") == 0
    assert len(scraped.matching("enginehouse_engine_replicas", engine="idle")) == len(ReplicaStatus)


def test_merge_keeps_sample_names_and_adds_labels() -> None:
    families = merge([_page(_row("r1"), _replica_text(1, 2))], taken=set())
    counter = next(f for f in families if f.name == "enginehouse_requests")
    assert [s.name for s in counter.samples] == ["enginehouse_requests_total"]
    assert counter.samples[0].labels == {
        "deployment": "ft", "status": "ok", "organization": "default", "engine": "demo", "replica": "r1",
    }


class _Fixed:
    def __init__(self, *families: Metric) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families
