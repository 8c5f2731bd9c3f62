"""What runs inside a replica's Ray actor: the replica's own process (``python -m
enginehouse.runtime``), started on the actor's node and listening on that node's address.

The actor owns the process: the process is told to die with the actor's worker (``prctl``'s
parent-death signal), so a killed actor or a lost node never leaves a replica serving that no
control plane knows of. The replica's log stays on its node; ``log_tail`` reads it from there.

Plain Python, without ``ray``: the provider wraps the class with ``ray.remote`` (its module is
importable on every node that has enginehouse installed, which is what Ray requires of it).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from pathlib import Path

from enginehouse.providers.local import free_port
from enginehouse.providers.local_process import declared_error, tail_lines, terminate_group
from enginehouse.replicaauth import SECRET_ENV

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In the replica's process before it runs: SIGKILL it when the actor's worker ends."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:  # not Linux: the actor's stop() is then the only way it ends
        pass


def node_facts() -> tuple[str, str]:
    """(this node's address as the rest of the cluster reaches it, the node's Ray id)."""
    import ray  # only ever called inside an actor, where Ray is running

    return str(ray.util.get_node_ip_address()), str(ray.get_runtime_context().get_node_id())


class ReplicaProcess:
    """One replica's process on this node; what the provider asks of it through the actor."""

    def __init__(self, replica_id: str, engine_id: str, runtime_args: list[str], secret: str, log_dir: str,
                 extra_env: dict[str, str]) -> None:
        self.replica_id = replica_id
        self.engine_id = engine_id
        host, self.node_id = node_facts()
        port = free_port(host)
        self.url = f"http://{host}:{port}"
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        self.log_path = str(Path(log_dir) / f"{replica_id}.log")
        command = [sys.executable, "-m", "enginehouse.runtime", *runtime_args, "--host", host, "--port", str(port)]
        # The secret travels in the environment, as with the local provider (never argv).
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1", **extra_env,
               SECRET_ENV: secret}
        with open(self.log_path, "ab") as log_file:
            self.process = subprocess.Popen(
                command, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                start_new_session=True, preexec_fn=die_with_parent,
            )

    def describe(self) -> dict[str, str]:
        return {"replica_id": self.replica_id, "engine_id": self.engine_id, "url": self.url, "node_id": self.node_id}

    def poll(self) -> tuple[int, str, bool] | None:
        """None while the process runs; else (exit code, why, whether it declared the failure)."""
        code = self.process.poll()
        if code is None:
            return None
        declared = declared_error(self.log_path)
        return code, declared or f"replica process exited (code {code})", declared is not None

    def stop(self, grace_s: float) -> None:
        if self.process.poll() is None:
            terminate_group(self.process.pid, grace_s, lambda: self.process.poll() is not None)
        self.process.wait(timeout=5)

    def log_tail(self, max_lines: int) -> list[str] | None:
        return tail_lines(self.log_path, max_lines)
