"""Which replicas the loop stops because the database does not know them: the pure decision, and
the loop applying it to a real record left on disk."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from enginehouse.core.specs import EngineSpec
from enginehouse.core.status import EngineStatus
from enginehouse.core.task_types import TaskType
from enginehouse.db.session import Database
from enginehouse.providers.base import ProviderReplica
from enginehouse.providers.local import LocalProvider
from enginehouse.providers.local_process import process_start_time
from enginehouse.providers.local_records import ReplicaRecord, read_records, write_record
from enginehouse.reconciler.loop import Reconciler
from enginehouse.reconciler.orphans import find_orphans
from enginehouse.services import engines, orgs
from enginehouse.services.status import switch_engine_status


def _replica(replica_id: str, engine_id: str) -> ProviderReplica:
    return ProviderReplica(replica_id, engine_id, f"http://127.0.0.1:1/{replica_id}")


def test_only_unknown_replicas_of_known_idle_engines_are_stopped() -> None:
    listed = [_replica("r-known", "e-1"), _replica("r-orphan", "e-1"), _replica("r-mid-launch", "e-busy"),
              _replica("r-stray", "e-elsewhere")]
    orphans = find_orphans(listed, known_replicas={"r-known"}, known_engines={"e-1", "e-busy"},
                           busy_engines={"e-busy"})
    assert [r.replica_id for r in orphans.stop] == ["r-orphan"]
    assert [r.replica_id for r in orphans.unknown_engine] == ["r-stray"]


def test_the_loop_stops_a_recorded_replica_the_database_does_not_know(
    database: Database, tmp_path: Path
) -> None:
    # A server killed between launching a replica and writing its row left this record behind.
    spec = EngineSpec(name="sleepy", base_model="/models/base", task_type=TaskType.TEXT_GENERATION)
    with database.session() as session:
        orgs.create_organization(session, "acme")
        org_id = orgs.create_api_key(session, "acme").organization_id
        engine = engines.create_engine(session, org_id, spec)
        switch_engine_status(session, engine, EngineStatus.ACTIVE)
        engines.deactivate_engine(session, org_id, engine.id, manual=True)
        switch_engine_status(session, engine, EngineStatus.INACTIVE)  # at rest: no step touches it
        engine_id = engine.id
    orphan = subprocess.Popen(["sleep", "120"], start_new_session=True)
    stray = subprocess.Popen(["sleep", "120"], start_new_session=True)
    try:
        left = ((orphan, "replica-orphan", engine_id), (stray, "replica-stray", "engine-x"))
        for process, replica_id, owner in left:
            record = ReplicaRecord(replica_id, owner, "http://127.0.0.1:9", process.pid,
                                   process_start_time(process.pid), "/dev/null")
            write_record(tmp_path / "replicas", record)
        reconciler = Reconciler(database, LocalProvider(tmp_path, find_gpus=lambda: []), interval_s=0.05)
        reconciler.start()
        try:
            assert orphan.wait(timeout=20) == -signal.SIGTERM
        finally:
            reconciler.stop(stop_replicas=False)
        assert stray.poll() is None  # its engine is not in this database: left alone
        assert [r.replica_id for r in read_records(tmp_path / "replicas")] == ["replica-stray"]
    finally:
        for process in (orphan, stray):
            process.kill()
            process.wait()
