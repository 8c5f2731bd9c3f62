"""A Ray cluster of two nodes on this machine (a head and a worker, started with ``ray start``,
two CPUs each), for the tests and the benchmark that place replicas on Ray; and a Ray driver of
its own to look at the cluster as an operator would."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.integration.harness import free_port, wait_for

# The cluster's token authentication, with a token of its own (never ~/.ray/auth_token, which a
# fresh machine does not have): every node, driver and server here is given it.
RAY_ENV = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32), "RAY_USAGE_STATS_ENABLED": "0"}


@dataclass
class RayCluster:
    address: str
    nodes: list[subprocess.Popen[bytes]]
    artifacts: Path  # the nodes' artifact cache

    def driver(self, code: str) -> Any:
        """Run ``code`` in a Ray driver of its own (as an operator would); what it prints, as JSON.
        ``ray`` is connected, in a namespace of its own (``replica_actors`` looks in them all)."""
        script = ("import json, ray\n"
                  f"ray.init(address={self.address!r}, log_to_driver=False)\n" + code)
        done = subprocess.run([sys.executable, "-c", script], env={**os.environ, **RAY_ENV}, capture_output=True,
                              text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"the Ray driver failed: {done.stderr[-3000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])

    def replica_actors(self) -> dict[str, dict[str, str]]:
        """Each live replica actor's description (replica id → url, node id ...), with its namespace."""
        return {d["replica_id"]: d for d in self.driver(
            "found = [a for a in ray.util.list_named_actors(all_namespaces=True) if a['name'].startswith('replica-')]\n"
            "print(json.dumps([{**ray.get(ray.get_actor(a['name'], namespace=a['namespace']).describe.remote()),\n"
            "                   'namespace': a['namespace']} for a in found]))")}

    def kill_actor(self, replica_id: str) -> None:
        namespace = self.replica_actors()[replica_id]["namespace"]
        self.driver(f"ray.kill(ray.get_actor('replica-{replica_id}', namespace={namespace!r}))\nprint('null')")

    def worker_node_id(self) -> str:
        [node_id] = self.driver("print(json.dumps([n['NodeID'] for n in ray.nodes() if n['Alive'] and "
                                "'node:__internal_head__' not in n['Resources']]))")
        return str(node_id)

    def lose_worker_node(self) -> None:
        """Kill the worker node's Ray processes outright, as a machine lost would."""
        _end_group(self.nodes[1], first=signal.SIGKILL)


@contextmanager
def local_ray_cluster() -> Iterator[RayCluster]:
    """A head and a worker node, stopped (every Ray process of theirs) when the block ends."""
    # Short: Ray's socket paths live under it, and a Unix socket path has a length limit.
    temp = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
    ray = Path(sys.executable).parent / "ray"
    # The nodes' artifact cache, the replicas' logs: inside the cluster's own directory.
    env = {**os.environ, **RAY_ENV, "ENGINEHOUSE_ARTIFACT_CACHE": str(temp / "artifacts")}
    common = ["--block", "--num-cpus=2", "--disable-usage-stats"]
    logs = [temp / "head.out", temp / "worker.out"]
    nodes: list[subprocess.Popen[bytes]] = []
    try:
        with open(logs[0], "wb") as out:
            nodes.append(subprocess.Popen(
                [str(ray), "start", "--head", f"--port={free_port()}", "--include-dashboard=false",
                 f"--temp-dir={temp}", *common], env=env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True))
        address = wait_for(lambda: _head_address(logs[0]), timeout=90, what=f"the Ray head ({logs[0]})")
        with open(logs[1], "wb") as out:
            nodes.append(subprocess.Popen([str(ray), "start", f"--address={address}", *common], env=env,
                                          stdout=out, stderr=subprocess.STDOUT, start_new_session=True))
        cluster = RayCluster(address, nodes, temp / "artifacts")
        wait_for(lambda: cluster.driver("print(sum(n['Alive'] for n in ray.nodes()))") == 2, timeout=90,
                 what=f"two Ray nodes ({logs[1]})")
        yield cluster
    finally:
        for node in reversed(nodes):  # the worker first, then the head
            _end_group(node)
        shutil.rmtree(temp, ignore_errors=True)


def _head_address(log: Path) -> str | None:
    found = re.search(r"ray start --address='([^']+)'", log.read_text(errors="replace"))
    return found.group(1) if found else None


def _end_group(process: subprocess.Popen[bytes], first: signal.Signals = signal.SIGTERM) -> None:
    for sig, wait_s in ((first, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
            process.wait(timeout=wait_s)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


