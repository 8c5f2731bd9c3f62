"""What the local provider remembers of each replica it launched, on disk.

One small JSON file per replica, ``<state dir>/<replica id>.json``, written atomically at launch
and removed when the replica is stopped. It outlives the server process: a server killed without
a chance to stop its replicas leaves them running (each has its own process group), and the next
server on the same data directory reads these records to adopt them instead of launching
duplicates. The database never sees a process id.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# Replica ids become file names: only what ``new_id`` makes (and nothing that walks the tree).
_SAFE_ID = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class ReplicaRecord:
    replica_id: str
    engine_id: str
    url: str
    pid: int
    # Field 22 of /proc/<pid>/stat (clock ticks after boot): with the pid, it names one process
    # for the machine's uptime, so a pid reused after the replica died is not mistaken for it.
    # None where it cannot be read (no /proc).
    start_time: int | None
    log_path: str


def record_path(directory: Path, replica_id: str) -> Path:
    if not _SAFE_ID.match(replica_id) or replica_id.startswith("."):
        raise ValueError(f"not a replica id: {replica_id!r}")
    return directory / f"{replica_id}.json"


def write_record(directory: Path, record: ReplicaRecord) -> None:
    """Write (or replace) a record atomically: a reader never sees half of one."""
    directory.mkdir(parents=True, exist_ok=True)
    path = record_path(directory, record.replica_id)
    scratch = path.with_name(f".{path.name}.tmp")
    with open(scratch, "w", encoding="utf-8") as handle:
        json.dump(asdict(record), handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(scratch, path)


def remove_record(directory: Path, replica_id: str) -> None:
    try:
        record_path(directory, replica_id).unlink()
    except FileNotFoundError:
        pass


def read_records(directory: Path) -> list[ReplicaRecord]:
    """Every readable record in ``directory``; one that cannot be read is logged and skipped
    (it names no process this provider could safely signal)."""
    records = []
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        try:
            fields = json.loads(path.read_text(encoding="utf-8"))
            records.append(_record(fields))
        except (OSError, ValueError, TypeError, KeyError) as exc:
            log.warning("ignoring unreadable replica record %s: %s", path, exc)
    return records


def _record(fields: dict[str, object]) -> ReplicaRecord:
    start_time = fields["start_time"]
    return ReplicaRecord(
        replica_id=str(fields["replica_id"]), engine_id=str(fields["engine_id"]), url=str(fields["url"]),
        pid=int(fields["pid"]),  # type: ignore[call-overload]
        start_time=None if start_time is None else int(start_time),  # type: ignore[call-overload]
        log_path=str(fields["log_path"]),
    )
