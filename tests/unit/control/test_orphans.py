"""Which replicas the loop stops because the database does not know them: a pure decision."""

from __future__ import annotations

from enginehouse.providers.base import ProviderReplica
from enginehouse.reconciler.orphans import find_orphans


def _replica(replica_id: str, engine_id: str) -> ProviderReplica:
    return ProviderReplica(replica_id, engine_id, f"http://127.0.0.1:1/{replica_id}")


def test_only_unknown_replicas_of_known_idle_engines_are_stopped() -> None:
    listed = [_replica("r-known", "e-1"), _replica("r-orphan", "e-1"), _replica("r-mid-launch", "e-busy"),
              _replica("r-stray", "e-elsewhere")]
    orphans = find_orphans(listed, known_replicas={"r-known"}, known_engines={"e-1", "e-busy"},
                           busy_engines={"e-busy"})
    assert [r.replica_id for r in orphans.stop] == ["r-orphan"]
    assert [r.replica_id for r in orphans.unknown_engine] == ["r-stray"]
