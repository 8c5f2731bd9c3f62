"""Replicas on a Ray cluster (``ENGINEHOUSE_PROVIDER=ray``): each in a Ray actor of its own that
owns the replica's process on the actor's node (``ray_replica``).

- **Placement.** An actor asks Ray for what its deployment option needs (a CPU, or the option's
  GPUs of its accelerator type) and the replicas of an engine are spread across nodes: each goes
  to the node that can hold it with the fewest of the engine's replicas. A replica no node can
  take within ``launch_timeout_s`` is a launch failure the reconciler retries with its backoff.
- **Finding them again.** Actors are named (``replica-<id>``) and detached, in a namespace of the
  control plane's own (``ray_namespace``: servers sharing a database share it, another
  installation on the same cluster has another): they outlive the server, and a restarted server
  (or a standby taking over) adopts those still alive instead of starting duplicates, as the local
  provider does with its records, and never takes another installation's replicas for orphans.
- **Liveness comes from Ray.** An actor that is gone (killed, or its node lost) is a replica that
  exited; a live actor reports whether its process still runs. The reconciler heals both as it
  heals a local replica.
- **Options come from the cluster.** ``cpu`` is a CPU node (the largest alive), and each GPU shape
  of the catalogue whose accelerator some alive node has is offered under that shape's name.

- **Files travel.** A replica whose node cannot see a model or checkpoint path of the server's
  fetches it from the server, checked by sha256 and cached on the node (``ArtifactSource``,
  ``runtime/artifacts.py``); Hub ids are downloaded by the node itself.

Fine-tuning jobs run on the cluster too, each in an actor of its own, their checkpoints brought
back to the server's data directory (``RayTrainer``, ``ray_training.py``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from enginehouse.core import options
from enginehouse.core.deadline import first_line
from enginehouse.core.options import DeploymentOption
from enginehouse.providers.base import LaunchedReplica, LaunchError, ProviderReplica, ReplicaExit, ReplicaLaunch
from enginehouse.providers.local import runtime_arguments
from enginehouse.providers.ray_actors import GONE, GONE_REASON, POLL_TIMEOUT_S, adopt_actors, answers
from enginehouse.providers.ray_training import GpuAsk, RayTrainer
from enginehouse.providers.trainer import DelegatesTraining
from enginehouse.requestlimits import RequestLimits
from enginehouse.runtime.artifacts import ARTIFACT_FETCH_ENV, ARTIFACT_URL_ENV

log = logging.getLogger(__name__)

NAMESPACE_PREFIX = "enginehouse-"
ACTOR_PREFIX = "replica-"
# Where replicas keep their logs on their node (each node's own disk).
NODE_LOG_DIR = str(Path(tempfile.gettempdir()) / "enginehouse" / "replica-logs")
# How long a replica's actor may wait for a node with room before its launch fails.
LAUNCH_TIMEOUT_S = 60.0
# Cluster resources are read again at most this often (the reconciler asks on every step).
OPTIONS_TTL_S = 10.0


def ray_installed() -> bool:
    return importlib.util.find_spec("ray") is not None


@dataclass(frozen=True)
class ArtifactSource:
    """Where a replica fetches the server's model and checkpoint files, and which it fetches
    (``runtime/artifacts.py``)."""

    server_url: str  # as the cluster's nodes reach it; a host listening on all is replaced
    fetch: str = "missing"  # or "always"

    def url_for(self, this_node: str) -> str:
        """The server's URL for the nodes, ``this_node`` being this machine's cluster address."""
        parsed = urlsplit(self.server_url)
        if parsed.hostname in ("0.0.0.0", "::", ""):
            return parsed._replace(netloc=f"{this_node}:{parsed.port}" if parsed.port else this_node).geturl()
        return self.server_url

    def environment(self, this_node: str) -> dict[str, str]:
        return {ARTIFACT_URL_ENV: self.url_for(this_node), ARTIFACT_FETCH_ENV: self.fetch}


@dataclass
class _Replica:
    replica_id: str
    engine_id: str
    url: str
    node_id: str  # the Ray node it runs on
    handle: Any  # the actor's handle
    exit: ReplicaExit | None = None  # once seen gone, it stays gone


class RayProvider(DelegatesTraining):
    def __init__(self, address: str, data_dir: Path, threads: int = 0, limits: RequestLimits | None = None,
                 training_threads: int = 0, launch_timeout_s: float = LAUNCH_TIMEOUT_S,
                 artifacts: ArtifactSource | None = None, namespace: str = f"{NAMESPACE_PREFIX}default",
                 training_cpus: int = 1, training_gpus: GpuAsk = "auto") -> None:
        if not ray_installed():
            raise RuntimeError("ENGINEHOUSE_PROVIDER=ray needs Ray: pip install 'enginehouse[ray]'")
        self.address = address
        self.threads = threads
        self.limits = limits or RequestLimits.default()
        self.launch_timeout_s = launch_timeout_s
        self.artifacts = artifacts
        self.namespace = namespace
        # Connected and read on first use, not here: constructing does no work.
        self._replicas: dict[str, _Replica] | None = None
        self._lock = threading.Lock()
        self._connect_lock = threading.Lock()
        self._actor_class: Any = None
        self._options: list[DeploymentOption] = []
        self._options_read_at = -OPTIONS_TTL_S
        self.trainer = RayTrainer(self._ray, data_dir, cpus=training_cpus, gpus=training_gpus,
                                  threads=training_threads, artifacts=artifacts, launch_timeout_s=launch_timeout_s)

    # -- the cluster --------------------------------------------------------------------------

    def _ray(self) -> Any:
        """The ``ray`` module, connected to the cluster (once); ``LaunchError`` when it cannot be."""
        import ray

        with self._connect_lock:
            if not ray.is_initialized():
                try:
                    ray.init(address=self.address, namespace=self.namespace, log_to_driver=False,
                             configure_logging=False)
                except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError...
                    raise LaunchError(f"cannot reach the Ray cluster at {self.address!r}: {exc}",
                                      permanent=False) from None
                log.info("connected to the Ray cluster at %s", self.address)
            if self._actor_class is None:
                from enginehouse.providers.ray_replica import ReplicaProcess

                # One call at a time per actor is what a replica needs; no restarts: a replica
                # that dies is replaced by the reconciler, which knows why.
                self._actor_class = ray.remote(max_restarts=0)(ReplicaProcess)
        return ray

    def deployment_options(self) -> list[DeploymentOption]:
        """What the alive nodes can give now, from Ray's view of them (read at most every
        ``OPTIONS_TTL_S``); none while the cluster cannot be reached."""
        now = time.monotonic()
        if now - self._options_read_at < OPTIONS_TTL_S:
            return list(self._options)
        try:
            nodes = self._ray().nodes()
        except Exception as exc:  # unreachable now: nothing can be offered until it is back
            log.warning("cannot read the Ray cluster's nodes: %s", exc)
            nodes = []
        self._options, self._options_read_at = cluster_options(nodes), now
        return list(self._options)

    # -- launch -------------------------------------------------------------------------------

    def launch(self, launch: ReplicaLaunch) -> LaunchedReplica:
        arguments = runtime_arguments(launch, self.limits, self.threads)
        if any("\x00" in argument for argument in arguments):  # no process can be given it, ever
            raise LaunchError(f"cannot start a replica for base model {launch.base_model!r}: it holds a NUL byte",
                              permanent=True)
        ray = self._ray()
        option = next((o for o in self.deployment_options() if o.name == launch.deployment_option), None)
        resources = actor_resources(option, self.threads)
        handle = self._actor_class.options(
            name=f"{ACTOR_PREFIX}{launch.replica_id}", lifetime="detached",
            scheduling_strategy=self._placement(ray, launch.engine_id, resources), **resources,
        ).remote(launch.replica_id, launch.engine_id, arguments, launch.secret, NODE_LOG_DIR, self._replica_env(ray))
        try:
            described = ray.get(handle.describe.remote(), timeout=self.launch_timeout_s)
        except ray.exceptions.GetTimeoutError:
            ray.kill(handle, no_restart=True)
            raise LaunchError(f"no node of the Ray cluster took the replica within {self.launch_timeout_s:g} s "
                              f"(deployment option {launch.deployment_option or 'cpu'})", permanent=False) from None
        except ray.exceptions.RayError as exc:
            ray.kill(handle, no_restart=True)
            raise LaunchError(f"the replica's Ray actor could not start it: {first_line(exc)}",
                              permanent=False) from None
        with self._lock:
            self._table()[launch.replica_id] = _Replica(launch.replica_id, launch.engine_id, described["url"],
                                                        described["node_id"], handle)
        log.info("started replica %s in a Ray actor, answering at %s", launch.replica_id, described["url"])
        return LaunchedReplica(replica_id=launch.replica_id, url=described["url"])

    def _replica_env(self, ray: Any) -> dict[str, str]:
        if self.artifacts is None:
            return {}
        return self.artifacts.environment(str(ray.util.get_node_ip_address()))

    def _placement(self, ray: Any, engine_id: str, resources: dict[str, Any]) -> Any:
        """Spread an engine's replicas: the alive node that can hold the actor and has the
        fewest of this engine's replicas (then the fewest replicas at all), as a soft node
        affinity (Ray places it elsewhere if that node has no room now). Ray's own ``SPREAD``
        takes nodes in turn, whatever they already run, so a replacement could join its sibling."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        with self._lock:
            running = [(e.engine_id, e.node_id) for e in self._table().values() if e.exit is None]
        fitting = [node["NodeID"] for node in ray.nodes() if node.get("Alive") and fits(node.get("Resources") or {},
                                                                                      resources)]
        if not fitting:
            return "SPREAD"  # none fits now: Ray waits for one (the launch times out if none comes)
        chosen = min(fitting, key=lambda node_id: (running.count((engine_id, node_id)),
                                                   sum(1 for _, node in running if node == node_id)))
        return NodeAffinitySchedulingStrategy(node_id=chosen, soft=True)

    # -- list ---------------------------------------------------------------------------------

    def _table(self) -> dict[str, _Replica]:
        """The replicas this provider has; call with the lock held. The first call adopts the
        replica actors alive in the cluster (launched by this server before a restart, or by
        the server this one took over from)."""
        if self._replicas is None:
            self._replicas = {}
            for handle, described in adopt_actors(self._ray(), ACTOR_PREFIX, POLL_TIMEOUT_S):
                log.info("found replica %s in the Ray cluster, left by a previous server", described["replica_id"])
                self._replicas[described["replica_id"]] = _Replica(
                    described["replica_id"], described["engine_id"], described["url"], described["node_id"], handle)
        return self._replicas

    def list_replicas(self, engine_id: str | None = None) -> list[ProviderReplica]:
        ray = self._ray()
        with self._lock:
            entries = [e for e in self._table().values() if engine_id is None or e.engine_id == engine_id]
        self._poll([e for e in entries if e.exit is None], ray)
        return [ProviderReplica(e.replica_id, e.engine_id, e.url, e.exit) for e in entries]

    @staticmethod
    def _poll(entries: list[_Replica], ray: Any) -> None:
        """Ask each actor, all at once, whether its process still runs; record those that ended."""
        for entry, ended in answers(ray, {entry.handle.poll.remote(): entry for entry in entries}, POLL_TIMEOUT_S):
            if ended is GONE:  # the actor died: killed, or its node is gone
                entry.exit = ReplicaExit(code=None, reason=GONE_REASON, permanent=False)
            elif ended is not None:
                code, reason, declared = ended
                entry.exit = ReplicaExit(code=code, reason=reason, permanent=declared)

    # -- stop ---------------------------------------------------------------------------------

    def stop(self, replica_id: str, grace_s: float = 5.0) -> None:
        with self._lock:
            entry = self._table().pop(replica_id, None)
        if entry is None:
            return
        ray = self._ray()
        try:
            ray.get(entry.handle.stop.remote(grace_s), timeout=grace_s + 10)
        except ray.exceptions.RayError:
            pass  # already gone, or hung: the kill below ends it, and its process with it
        try:
            ray.kill(entry.handle, no_restart=True)
        except ValueError:
            pass

    def stop_all(self) -> None:
        with self._lock:
            replica_ids = list(self._table())
        for replica_id in replica_ids:
            self.stop(replica_id)

    def replica_log(self, replica_id: str, max_lines: int) -> list[str] | None:
        with self._lock:
            entry = self._table().get(replica_id)
        if entry is None or entry.exit is not None and entry.exit.reason == GONE_REASON:
            return None
        ray = self._ray()
        try:
            lines = ray.get(entry.handle.log_tail.remote(max_lines), timeout=POLL_TIMEOUT_S)
        except ray.exceptions.RayError:
            return None
        return None if lines is None else list(lines)


def ray_namespace(database_url: str) -> str:
    """The Ray namespace of the control plane on ``database_url``: the same for every server on
    that database (PostgreSQL schema included), another for another installation."""
    from sqlalchemy import make_url

    identity = make_url(database_url).render_as_string(hide_password=True)
    return NAMESPACE_PREFIX + hashlib.sha256(identity.encode()).hexdigest()[:16]


def actor_resources(option: DeploymentOption | None, threads: int) -> dict[str, Any]:
    """What a replica's actor asks Ray for: the option's GPUs of its accelerator type, or CPUs
    (the replica's torch threads, at least one)."""
    if option is not None and option.kind == "gpu" and option.accelerator:
        return {"num_cpus": 1, "num_gpus": option.accelerator_count or 1,
                "accelerator_type": ray_accelerator_type(option.accelerator)}
    return {"num_cpus": max(1, threads)}


def fits(node_resources: dict[str, float], resources: dict[str, Any]) -> bool:
    """Whether a node with ``node_resources`` in all (as ``ray.nodes()`` gives them) can hold an
    actor asking for ``resources`` (``actor_resources``)."""
    if node_resources.get("CPU", 0) < resources.get("num_cpus", 0):
        return False
    if node_resources.get("GPU", 0) < resources.get("num_gpus", 0):
        return False
    accelerator = resources.get("accelerator_type")
    return accelerator is None or bool(node_resources.get(f"accelerator_type:{accelerator}"))


def ray_accelerator_type(accelerator: str) -> str:
    """Ray's name of an accelerator (``A100`` for ``NVIDIA A100``)."""
    return accelerator.removeprefix("NVIDIA ").strip()


def cluster_options(nodes: list[dict[str, Any]]) -> list[DeploymentOption]:
    """The options the alive ``nodes`` (as ``ray.nodes()`` lists them) can give: ``cpu`` (the
    largest CPU node), and each catalogue GPU shape whose accelerator and count one node has."""
    alive = [node.get("Resources") or {} for node in nodes if node.get("Alive")]
    if not alive:
        return []
    largest = max(alive, key=lambda resources: resources.get("CPU", 0))
    found = [DeploymentOption("cpu", "cpu", None, None, int(largest.get("CPU", 0)),
                              round(float(largest.get("memory", 0)) / options.GB, 1), (0.0, 0.0))]
    for shape in options.CLOUD_GPU_SHAPES:
        wanted = f"accelerator_type:{ray_accelerator_type(shape.accelerator or '')}"
        if any(resources.get(wanted) and resources.get("GPU", 0) >= shape.accelerator_count for resources in alive):
            found.append(shape)
    return found

