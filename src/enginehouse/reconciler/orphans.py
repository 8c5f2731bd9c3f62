"""Replicas a provider has that the database does not know.

A step launches a replica and records it in the same step; a server killed between the two (or a
write that failed) leaves a replica nothing would ever stop, holding memory and a GPU. The loop
asks the provider for all its replicas now and then and stops those, conservatively: only when
their engine exists (a replica of an engine this database never had may belong to another
server's database on the same machine) and when no step of that engine is in flight (that step
may be between launching a replica and writing its row).
"""

from __future__ import annotations

from dataclasses import dataclass

from enginehouse.providers.base import ProviderReplica


@dataclass(frozen=True)
class Orphans:
    stop: list[ProviderReplica]  # their engine exists and is idle, their row does not
    unknown_engine: list[ProviderReplica]  # left alone, only logged


def find_orphans(
    listed: list[ProviderReplica], known_replicas: set[str], known_engines: set[str], busy_engines: set[str]
) -> Orphans:
    stop, unknown_engine = [], []
    for replica in listed:
        if replica.replica_id in known_replicas or replica.engine_id in busy_engines:
            continue
        (stop if replica.engine_id in known_engines else unknown_engine).append(replica)
    return Orphans(stop, unknown_engine)
