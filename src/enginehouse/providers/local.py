"""Replicas as subprocesses of this machine, each serving HTTP on a free loopback port.

It offers this machine's CPU (``cpu``) and each of its GPUs (``local-gpu0-…``); a replica placed
on a local GPU sees only that GPU.

Replicas run in their own session (process group) so that they outlive a crashed server. What the
provider needs to find one again (its pid and start time, address, log file) is kept in a record
under ``<data dir>/replicas/`` (``local_records``): a restarted server reads them and adopts the
replicas still running instead of starting duplicates.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from enginehouse.core import options
from enginehouse.core.options import DeploymentOption
from enginehouse.providers.base import LaunchedReplica, LaunchError, ProviderReplica, ReplicaExit, ReplicaLaunch
from enginehouse.providers.local_gpus import LocalGpu, probe_local_gpus
from enginehouse.providers.local_process import (
    declared_error, is_running, process_start_time, tail_lines, terminate_group,
)
from enginehouse.providers.local_records import ReplicaRecord, read_records, record_path, remove_record, write_record
from enginehouse.providers.local_training import LocalTrainer
from enginehouse.providers.trainer import DelegatesTraining
from enginehouse.replicaauth import SECRET_ENV
from enginehouse.requestlimits import RequestLimits

log = logging.getLogger(__name__)


@dataclass
class _Replica:
    record: ReplicaRecord
    # The process handle when this server launched it (it knows the exit code and reaps it);
    # None for a replica adopted from a previous server.
    child: subprocess.Popen[bytes] | None
    exit: ReplicaExit | None = None  # once seen gone, it stays gone


class LocalProvider(DelegatesTraining):
    def __init__(
        self,
        data_dir: Path,
        host: str = "127.0.0.1",
        threads: int = 0,
        limits: RequestLimits | None = None,
        find_gpus: Callable[[], list[LocalGpu]] = probe_local_gpus,
        training_threads: int = 0,
    ) -> None:
        self.log_dir = data_dir / "logs"
        self.state_dir = data_dir / "replicas"
        self.host = host
        self.threads = threads
        # Replicas bound request bodies as the server does: the gateway forwards what it accepted.
        self.limits = limits or RequestLimits.default()
        # Read from the state directory on first use, not here: constructing does no work.
        self._replicas: dict[str, _Replica] | None = None
        self._lock = threading.Lock()  # the reconciler calls in from several worker threads
        self._find_gpus = find_gpus
        self._gpu_devices: dict[str, int] | None = None  # option name → CUDA device index
        self._options: list[DeploymentOption] | None = None
        self._options_lock = threading.Lock()
        self.trainer = LocalTrainer(data_dir, threads=training_threads)

    def deployment_options(self) -> list[DeploymentOption]:
        """This machine's CPU and GPUs, found on first use and remembered (they do not change
        while the server runs)."""
        with self._options_lock:
            if self._options is None:
                gpus = {options.local_gpu(g.index, g.name, g.memory_bytes): g.index for g in self._find_gpus()}
                self._gpu_devices = {option.name: index for option, index in gpus.items()}
                self._options = [options.host_cpu(), *gpus]
            return list(self._options)

    def _device_environment(self, option: str | None) -> dict[str, str]:
        if option is None:
            return {}
        self.deployment_options()
        device = (self._gpu_devices or {}).get(option)
        return {} if device is None else {"CUDA_VISIBLE_DEVICES": str(device)}

    def _table(self) -> dict[str, _Replica]:
        """The replicas this provider has; call with the lock held. The first call adopts those
        a previous server on this data directory left recorded."""
        if self._replicas is None:
            self._replicas = {}
            for record in read_records(self.state_dir):
                log.info("found replica %s (pid %s) left by a previous server", record.replica_id, record.pid)
                self._replicas[record.replica_id] = _Replica(record, child=None)
        return self._replicas

    # -- launch ------------------------------------------------------------------------------

    def launch(self, launch: ReplicaLaunch) -> LaunchedReplica:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        port = free_port(self.host)
        log_path = self.log_dir / f"{launch.replica_id}.log"
        # The secret goes in the environment, which only this user can read (/proc/<pid>/environ),
        # not on the command line; the record below does not keep it (the database does).
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1",
               **self._device_environment(launch.deployment_option), SECRET_ENV: launch.secret}
        process = self._spawn(self._command(launch, port), env, log_path, launch.base_model)
        record = ReplicaRecord(
            replica_id=launch.replica_id, engine_id=launch.engine_id, url=f"http://{self.host}:{port}",
            pid=process.pid, start_time=process_start_time(process.pid), log_path=str(log_path),
        )
        try:
            write_record(self.state_dir, record)
        except (OSError, ValueError) as exc:
            # A replica without a record could not be found again after a crash: do not keep it.
            terminate_group(process.pid, 5.0, lambda: process.poll() is not None)
            process.wait(timeout=1)
            raise LaunchError(f"cannot record the replica process: {getattr(exc, 'strerror', None) or exc}",
                              permanent=False) from None
        with self._lock:
            self._table()[launch.replica_id] = _Replica(record, child=process)
        log.info("started replica %s (pid %s) on port %s", launch.replica_id, process.pid, port)
        return LaunchedReplica(replica_id=launch.replica_id, url=record.url)

    def _command(self, launch: ReplicaLaunch, port: int) -> list[str]:
        return [sys.executable, "-m", "enginehouse.runtime", *runtime_arguments(launch, self.limits, self.threads),
                "--host", self.host, "--port", str(port)]

    @staticmethod
    def _spawn(command: list[str], env: dict[str, str], log_path: Path, base_model: str) -> subprocess.Popen[bytes]:
        with open(log_path, "ab") as log_file:
            try:
                return subprocess.Popen(
                    command, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    env=env, start_new_session=True,
                )
            except ValueError as exc:  # an argument no process can take (a NUL byte): never will
                raise LaunchError(f"cannot start a replica for base model {base_model!r}: {exc}",
                                  permanent=True) from None
            except OSError as exc:  # out of processes or memory: may pass
                raise LaunchError(f"cannot start a replica process: {exc.strerror or exc}",
                                  permanent=False) from None

    # -- list --------------------------------------------------------------------------------

    def list_replicas(self, engine_id: str | None = None) -> list[ProviderReplica]:
        with self._lock:
            entries = [e for e in self._table().values()
                       if engine_id is None or e.record.engine_id == engine_id]
            return [ProviderReplica(e.record.replica_id, e.record.engine_id, e.record.url, _exit(e))
                    for e in entries]

    # -- stop --------------------------------------------------------------------------------

    def stop(self, replica_id: str, grace_s: float = 5.0) -> None:
        with self._lock:
            entry = self._table().pop(replica_id, None)
        if entry is None:
            return
        child, record = entry.child, entry.record
        if child is not None:
            if child.poll() is None:
                terminate_group(child.pid, grace_s, lambda: child.poll() is not None)
            child.wait(timeout=1)
        elif is_running(record.pid, record.start_time):  # never signal a pid someone reused
            terminate_group(record.pid, grace_s, lambda: not is_running(record.pid, record.start_time))
        remove_record(self.state_dir, replica_id)

    def stop_all(self) -> None:
        with self._lock:
            replica_ids = list(self._table())
        for replica_id in replica_ids:
            self.stop(replica_id)

    def replica_log(self, replica_id: str, max_lines: int) -> list[str] | None:
        # Its file is named by its id, whether this server or a previous one launched it.
        try:
            path = record_path(self.log_dir, replica_id).with_suffix(".log")  # refuses what is not an id
        except ValueError:
            return None
        return tail_lines(path, max_lines)


def runtime_arguments(launch: ReplicaLaunch, limits: RequestLimits, threads: int) -> list[str]:
    """``python -m enginehouse.runtime``'s arguments for ``launch``, less where it listens (which
    the provider chooses: a loopback port here, the node's address on a cluster)."""
    arguments = [
        "--task-type", launch.task_type,
        "--base-model", launch.base_model,
        "--served-name", launch.served_name,
        "--replica-id", launch.replica_id,
        "--runtime-options", json.dumps(launch.runtime_options),
        "--max-body-bytes", str(limits.max_body_bytes),
        "--max-json-depth", str(limits.max_json_depth),
    ]
    return arguments + (["--threads", str(threads)] if threads else [])


def _exit(entry: _Replica) -> ReplicaExit | None:
    """How ``entry``'s process ended, or None while it runs (remembered once it has ended)."""
    if entry.exit is not None:
        return entry.exit
    if entry.child is not None:
        code = entry.child.poll()
        if code is None:
            return None
    elif is_running(entry.record.pid, entry.record.start_time):
        return None
    else:
        code = None  # a previous server's child: its exit code went with that server
    declared = declared_error(entry.record.log_path)
    reason = declared or (f"replica process exited (code {code})" if code is not None
                          else "replica process is gone")
    entry.exit = ReplicaExit(code=code, reason=reason, permanent=declared is not None)
    return entry.exit


def free_port(host: str) -> int:
    """A TCP port free on ``host`` now (the replica binds it right after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
