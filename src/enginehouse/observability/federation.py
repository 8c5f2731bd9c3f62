"""Replicas' own series, fetched at scrape time and re-exposed by the server.

Each ready replica's ``/metrics`` is fetched concurrently with a short timeout; one that does not
answer (busy, dying, just stopped) is left out of this scrape rather than holding it up. The
families are merged by name with the replica's labels added to every sample, so a deployment's
series carry ``deployment`` and ``engine`` and two replicas' series stay apart.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass

import aiohttp
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from enginehouse.observability.inventory import ReplicaRow

log = logging.getLogger(__name__)

# Long enough for a replica whose event loop is busy streaming; short enough for a scraper's own
# timeout (Prometheus defaults to 10 s) to hold a whole scrape.
SCRAPE_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class ReplicaPage:
    labels: dict[str, str]
    text: str


async def scrape_replicas(
    client: aiohttp.ClientSession, replicas: list[ReplicaRow], timeout: float = SCRAPE_TIMEOUT_S
) -> list[ReplicaPage]:
    pages = await asyncio.gather(*(_fetch(client, replica, timeout) for replica in replicas))
    return [page for page in pages if page is not None]


async def _fetch(client: aiohttp.ClientSession, replica: ReplicaRow, timeout: float) -> ReplicaPage | None:
    try:
        async with client.get(f"{replica.address.url}/metrics", headers=replica.address.headers(),
                              timeout=aiohttp.ClientTimeout(total=timeout)) as response:
            if response.status != 200:
                log.debug("replica %s answered /metrics with %d", replica.id, response.status)
                return None
            text = await response.text()
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        log.debug("replica %s did not answer /metrics: %s", replica.id, exc)
        return None
    return ReplicaPage(replica.labels, text)


def merge(pages: Iterable[ReplicaPage], taken: set[str]) -> list[Metric]:
    """One family per name across replicas. Names in ``taken`` (the server's own) are skipped, as
    is a family whose type differs from the same name's on an earlier replica (mixed versions):
    the exposition must stay valid whatever a replica says."""
    families: dict[str, Metric] = {}
    for page in pages:
        parsed = _parse(page)
        for family in parsed:
            if family.name in taken:
                continue
            merged = families.get(family.name)
            if merged is None:
                merged = Metric(family.name, family.documentation, family.type, family.unit)
                families[family.name] = merged
            elif merged.type != family.type:
                continue
            # Sample names keep their suffixes (_total, _bucket, _sum, _count) and "le".
            merged.samples.extend(s._replace(labels={**s.labels, **page.labels}) for s in family.samples)
    return list(families.values())


def _parse(page: ReplicaPage) -> list[Metric]:
    # Parsed whole before anything is merged, so a malformed page adds nothing, not half.
    try:
        return list(text_string_to_metric_families(page.text))
    except ValueError as exc:
        log.warning("replica %s sent unreadable metrics (%s); leaving them out", page.labels.get("replica"), exc)
        return []
