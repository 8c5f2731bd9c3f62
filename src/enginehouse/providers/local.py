"""Replicas as subprocesses of this machine, each serving HTTP on a free loopback port.

It offers this machine's CPU (``cpu``) and each of its GPUs (``local-gpu0-…``); a replica placed
on a local GPU sees only that GPU.

Replicas run in their own session (process group) so that they outlive a crashed server: a
restarted server finds them through the database and adopts them instead of starting duplicates.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from enginehouse.core import options
from enginehouse.core.options import DeploymentOption
from enginehouse.providers.base import LaunchedReplica, LaunchError, ReplicaExit, ReplicaLaunch
from enginehouse.providers.local_gpus import LocalGpu, probe_local_gpus
from enginehouse.requestlimits import RequestLimits

log = logging.getLogger(__name__)

# The line a replica prints on stderr before exiting when it cannot come up for a reason that a
# restart will not fix (a model that does not load, options it cannot honour).
REPLICA_ERROR_MARKER = "ENGINEHOUSE_REPLICA_ERROR:"


class LocalProvider:
    def __init__(
        self,
        log_dir: Path,
        host: str = "127.0.0.1",
        threads: int = 0,
        limits: RequestLimits | None = None,
        find_gpus: Callable[[], list[LocalGpu]] = probe_local_gpus,
    ) -> None:
        self.log_dir = log_dir
        self.host = host
        self.threads = threads
        # Replicas bound request bodies as the server does: the gateway forwards what it accepted.
        self.limits = limits or RequestLimits.default()
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._find_gpus = find_gpus
        self._gpu_devices: dict[str, int] | None = None  # option name → CUDA device index
        self._options: list[DeploymentOption] | None = None
        self._options_lock = threading.Lock()

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

    def launch(self, launch: ReplicaLaunch) -> LaunchedReplica:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        port = _free_port(self.host)
        log_path = self.log_dir / f"{launch.replica_id}.log"
        command = [
            sys.executable, "-m", "enginehouse.runtime",
            "--task-type", launch.task_type,
            "--base-model", launch.base_model,
            "--served-name", launch.served_name,
            "--host", self.host,
            "--port", str(port),
            "--replica-id", launch.replica_id,
            "--runtime-options", json.dumps(launch.runtime_options),
            "--max-body-bytes", str(self.limits.max_body_bytes),
            "--max-json-depth", str(self.limits.max_json_depth),
        ]
        if self.threads:
            command += ["--threads", str(self.threads)]
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1",
               **self._device_environment(launch.deployment_option)}
        with open(log_path, "ab") as log_file:
            try:
                process = subprocess.Popen(
                    command, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    env=env, start_new_session=True,
                )
            except ValueError as exc:  # an argument no process can take (a NUL byte): never will
                raise LaunchError(f"cannot start a replica for base model {launch.base_model!r}: {exc}",
                                  permanent=True) from None
            except OSError as exc:  # out of processes or memory: may pass
                raise LaunchError(f"cannot start a replica process: {exc.strerror or exc}",
                                  permanent=False) from None
        self._children[launch.replica_id] = process
        log.info("started replica %s (pid %s) on port %s", launch.replica_id, process.pid, port)
        return LaunchedReplica(
            replica_id=launch.replica_id,
            url=f"http://{self.host}:{port}",
            pid=process.pid,
            log_path=str(log_path),
        )

    def exit_status(self, replica_id: str, pid: int | None, log_path: str | None) -> ReplicaExit | None:
        child = self._children.get(replica_id)
        if child is not None:
            code = child.poll()
            if code is None:
                return None
        elif pid is not None and _is_our_replica(pid, replica_id):
            return None
        else:
            code = None  # not our child (a previous server's) and gone: the exit code is lost
        reason = _declared_error(log_path)
        if reason is None:
            reason = f"replica process exited (code {code})" if code is not None else "replica process is gone"
        return ReplicaExit(code=code, reason=reason, permanent=_declared_error(log_path) is not None)

    def stop(self, replica_id: str, pid: int | None, grace_s: float = 5.0) -> None:
        child = self._children.pop(replica_id, None)
        if child is not None:
            _terminate_group(child.pid, grace_s, lambda: child.poll() is not None)
            child.wait(timeout=1)
        elif pid is not None and _is_our_replica(pid, replica_id):
            _terminate_group(pid, grace_s, lambda: not _is_our_replica(pid, replica_id))

    def stop_all(self) -> None:
        for replica_id, child in list(self._children.items()):
            self.stop(replica_id, child.pid)


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _is_our_replica(pid: int, replica_id: str) -> bool:
    """True when ``pid`` is alive and is the replica ``replica_id`` (pids get reused)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":  # a zombie has exited
        return False
    return replica_id.encode() in cmdline


def _declared_error(log_path: str | None) -> str | None:
    if not log_path:
        return None
    try:
        with open(log_path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 16384))
            tail = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    for line in reversed(tail.splitlines()):
        if REPLICA_ERROR_MARKER in line:
            return line.split(REPLICA_ERROR_MARKER, 1)[1].strip()
    return None


def _terminate_group(pid: int, grace_s: float, gone) -> None:  # type: ignore[no-untyped-def]
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        except PermissionError:
            os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if gone():
                return
            time.sleep(0.05)
