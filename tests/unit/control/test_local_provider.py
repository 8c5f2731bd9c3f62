"""The local provider's memory of its replicas: a record per replica on disk, read back by a new
provider on the same data directory (a restarted server) to adopt what still runs. Real processes
(``sleep``, and one real replica launch) stand in for replicas; nothing is mocked."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from enginehouse.providers.base import ReplicaLaunch
from enginehouse.providers.local import LocalProvider
from enginehouse.providers.local_process import REPLICA_ERROR_MARKER, is_running, process_start_time
from enginehouse.providers.local_records import ReplicaRecord, read_records, record_path, write_record

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


@pytest.fixture()
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A process in its own group, as a replica runs; killed whatever the test did."""
    process = subprocess.Popen(["sleep", "120"], start_new_session=True)
    yield process
    process.kill()
    process.wait()


def _record(tmp_path: Path, pid: int, start_time: int | None, log_text: str = "",
            replica_id: str = "replica-0001") -> ReplicaRecord:
    log_path = tmp_path / "logs" / f"{replica_id}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.write_text(log_text)
    record = ReplicaRecord(replica_id, "engine-a", "http://127.0.0.1:9", pid, start_time, str(log_path))
    write_record(tmp_path / "replicas", record)
    return record


def launched_pid(data_dir: Path) -> int:
    [record] = read_records(data_dir / "replicas")
    return record.pid


def test_records_round_trip_and_unreadable_ones_are_skipped(tmp_path: Path) -> None:
    record = _record(tmp_path, 4242, 17)
    (tmp_path / "replicas" / "replica-broken.json").write_text("{not json")
    assert read_records(tmp_path / "replicas") == [record]
    assert not list((tmp_path / "replicas").glob(".*"))  # no scratch file left behind
    with pytest.raises(ValueError):
        record_path(tmp_path, "../escape")


def test_a_recorded_replica_is_adopted_then_seen_to_exit(tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    _record(tmp_path, sleeper.pid, process_start_time(sleeper.pid))
    provider = LocalProvider(tmp_path)  # a restarted server on the same data directory
    [listed] = provider.list_replicas()
    assert (listed.replica_id, listed.engine_id, listed.url, listed.running) == (
        "replica-0001", "engine-a", "http://127.0.0.1:9", True)
    assert provider.list_replicas("engine-a") == [listed] and provider.list_replicas("engine-b") == []
    sleeper.kill()
    sleeper.wait()
    [gone] = provider.list_replicas()
    assert gone.exit is not None and not gone.exit.permanent
    assert gone.exit.reason == "replica process is gone"
    provider.stop("replica-0001")  # an exited replica is forgotten, record and all
    assert provider.list_replicas() == [] and read_records(tmp_path / "replicas") == []


def test_an_exit_the_replica_declared_is_permanent(tmp_path: Path) -> None:
    # A pid above Linux's highest (2**22): no process has it, as after the replica exited.
    _record(tmp_path, 2**22 + 7, None, f"loading\n{REPLICA_ERROR_MARKER} no model at /models/x\n")
    [gone] = LocalProvider(tmp_path).list_replicas()
    assert gone.exit is not None
    assert (gone.exit.reason, gone.exit.permanent) == ("no model at /models/x", True)


def test_a_pid_reused_by_another_process_is_not_the_replica(tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    started = process_start_time(sleeper.pid)
    assert started is not None and is_running(sleeper.pid, started)
    _record(tmp_path, sleeper.pid, started - 1)  # the replica that had this pid started earlier
    provider = LocalProvider(tmp_path)
    [listed] = provider.list_replicas()
    assert not listed.running
    provider.stop("replica-0001")
    assert sleeper.poll() is None  # the process that took the pid is left alone


def test_stopping_an_adopted_replica_ends_its_process(tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    _record(tmp_path, sleeper.pid, process_start_time(sleeper.pid))
    LocalProvider(tmp_path).stop("replica-0001", grace_s=2)
    assert sleeper.wait(timeout=5) == -signal.SIGTERM
    assert read_records(tmp_path / "replicas") == []


def test_a_launched_replica_is_recorded_and_a_new_provider_adopts_it(tmp_path: Path) -> None:
    first = LocalProvider(tmp_path, find_gpus=lambda: [])
    secret = "a-secret-for-replica-0002"
    launched = first.launch(ReplicaLaunch("replica-0002", "engine-a", "served", "embedding", str(tmp_path / "none"),
                                          secret=secret))
    # The secret reaches the replica in its environment, not on its command line, and the record
    # on disk does not keep it (the database does).
    [record_file] = (tmp_path / "replicas").glob("*.json")
    assert secret not in record_file.read_text()
    try:
        cmdline, environ = (Path(f"/proc/{launched_pid(tmp_path)}/{f}").read_bytes() for f in ("cmdline", "environ"))
    except OSError:
        pass  # it already exited (its base model does not exist): nothing left to look at
    else:
        assert secret.encode() not in cmdline
        assert not environ or f"ENGINEHOUSE_REPLICA_SECRET={secret}".encode() in environ.split(b"\0")
    [record] = read_records(tmp_path / "replicas")
    assert (record.replica_id, record.engine_id, record.url) == ("replica-0002", "engine-a", launched.url)
    assert record.log_path == str(tmp_path / "logs" / "replica-0002.log")
    assert record.start_time == process_start_time(record.pid)
    try:
        second = LocalProvider(tmp_path, find_gpus=lambda: [])  # the server restarted
        assert [(r.replica_id, r.url) for r in second.list_replicas()] == [("replica-0002", launched.url)]
        second.stop("replica-0002", grace_s=5)
        assert not is_running(record.pid, record.start_time)
        assert read_records(tmp_path / "replicas") == []
    finally:
        first.stop_all()  # reaps its child; the replica is already gone
