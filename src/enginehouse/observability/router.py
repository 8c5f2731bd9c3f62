"""``GET /metrics`` on the server: an operator endpoint, without an API key (it listens where the
server listens, loopback by default). It shows every organization's engine and deployment names."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from starlette.responses import PlainTextResponse, Response

from enginehouse.db.session import Database
from enginehouse.observability.federation import ReplicaPage, merge, scrape_replicas
from enginehouse.observability.inventory import Inventory, read_inventory, replica_counts

router = APIRouter()


# Documented as text/plain: the Prometheus text format, whose version parameter rides along.
@router.get("/metrics", response_class=PlainTextResponse, tags=["operations"])
async def metrics(request: Request) -> Response:
    state = request.app.state
    inventory = await asyncio.to_thread(_inventory, state.database)
    pages = await scrape_replicas(state.gateway.http, inventory.ready())
    # Parsing and rendering every replica's series is CPU work; keep it off the event loop.
    body = await asyncio.to_thread(render, state.metrics_registry, inventory, pages)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def _inventory(database: Database) -> Inventory:
    with database.session() as session:
        return read_inventory(session)


def render(registry: CollectorRegistry, inventory: Inventory, pages: list[ReplicaPage]) -> bytes:
    own = [*registry.collect(), replica_counts(inventory)]
    families = own + merge(pages, taken={family.name for family in own})
    return generate_latest(_Families(families))


class _Families:
    """A fixed list of families in the shape ``generate_latest`` reads (a collector)."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families
