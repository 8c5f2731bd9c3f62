"""Fine-tuning jobs on a Ray cluster (``ENGINEHOUSE_PROVIDER=ray``): each in a detached, named
Ray actor (``training-<job id>``, in the control plane's namespace, like its replicas) that owns
the job's worker process in a job directory on its node (``ray_training_actor``).

- **Placement.** The actor asks Ray for ``ray_training_cpus`` CPUs and, with ``ray_training_gpus``,
  GPUs ("auto": one when some alive node has a GPU). A job no alive node could ever hold fails at
  once, saying what it asked for; one that waits for room longer than the launch timeout fails so.
- **Files travel.** The job's base model, datasets and starting checkpoints are fetched by its
  node from this server (``ray_fetch_artifacts`` says which), through routes that answer only the
  job's own secret and only for those paths (``artifact_grants``). Hub ids are the node's to fetch.
- **Checkpoints come back.** Each checkpoint the worker reports is copied into the server's
  ``<data dir>/training/<job id>/``, checked file by file (``checkpoint_copy``), and reported to the
  control plane only once it is there, with the server's path: deployments point at the server's
  files exactly as with the local provider. A job's end is reported only once all are back.
- **Finding them again.** A restarted server (or a standby taking over) adopts the live actors; a
  job whose actor is gone (killed, its node lost) is reported exited, and the supervisor fails it.
- **Logs.** Read on the node while the actor lives; when the job is released, its log is copied
  into the server's job directory, where it stays readable.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from enginehouse.artifact_grants import job_directory, revoke_grant, write_grant
from enginehouse.core.deadline import first_line
from enginehouse.providers.base import LaunchError, ProviderTraining, ReplicaExit, TrainingLaunch
from enginehouse.providers.checkpoint_copy import CheckpointCopyError, copy_checkpoint
from enginehouse.providers.local_process import tail_lines
from enginehouse.providers.ray_actors import GONE, GONE_REASON, POLL_TIMEOUT_S, adopt_actors, answers
from enginehouse.providers.ray_training_actor import LOG_FILE, fetched_paths
from enginehouse.providers.trainer import worker_config
from enginehouse.replicaauth import new_secret

if TYPE_CHECKING:  # ray_cluster imports this module
    from enginehouse.providers.ray_cluster import ArtifactSource

log = logging.getLogger(__name__)

ACTOR_PREFIX = "training-"
# Where jobs keep their directories on their node (each node's own disk).
NODE_JOB_ROOT = str(Path(tempfile.gettempdir()) / "enginehouse" / "training-jobs")
CALL_TIMEOUT_S = 60.0
# Passes in a row a checkpoint may fail to come back before the job is failed for it.
COPY_PASSES = 3
# Lines of a job's log kept on the server once the job is released.
KEPT_LOG_LINES = 20000
GpuAsk = Literal["auto"] | int


def training_resources(nodes: list[dict[str, Any]], cpus: int, gpus: GpuAsk) -> dict[str, Any]:
    """What a job's actor asks Ray for, given the cluster's ``nodes`` (as ``ray.nodes()`` lists
    them); ``LaunchError`` when no alive node has that much, even idle."""
    alive = [node.get("Resources") or {} for node in nodes if node.get("Alive")]
    wanted_gpus = (1 if any(r.get("GPU", 0) >= 1 for r in alive) else 0) if gpus == "auto" else gpus
    resources: dict[str, Any] = {"num_cpus": cpus, "num_gpus": wanted_gpus}
    if not any(r.get("CPU", 0) >= cpus and r.get("GPU", 0) >= wanted_gpus for r in alive):
        largest = max(alive, key=lambda r: (r.get("GPU", 0), r.get("CPU", 0)), default={})
        asked = f"{cpus} CPU(s)" + (f" and {wanted_gpus} GPU(s)" if wanted_gpus else "")
        raise LaunchError(f"no node of the Ray cluster has {asked} for a training job (the largest has "
                          f"{largest.get('CPU', 0):g} CPU(s), {largest.get('GPU', 0):g} GPU(s)); see "
                          f"ENGINEHOUSE_RAY_TRAINING_CPUS and ENGINEHOUSE_RAY_TRAINING_GPUS", permanent=True)
    return resources


@dataclass
class _Job:
    job_id: str
    handle: Any
    state: dict[str, Any] = field(default_factory=dict)  # the actor's last poll() answer
    gone: bool = False  # once seen gone, it stays gone
    failed_copies: dict[str, int] = field(default_factory=dict)  # checkpoint name → passes failed
    lost: str | None = None  # why a checkpoint was given up on


class RayTrainer:
    def __init__(self, connect: Callable[[], Any], data_dir: Path, *, cpus: int = 1, gpus: GpuAsk = "auto",
                 threads: int = 0, artifacts: ArtifactSource | None = None, launch_timeout_s: float = 60.0) -> None:
        self._connect = connect  # the provider's: ``ray``, connected in the control plane's namespace
        self.root = data_dir / "training"
        self.cpus, self.gpus = cpus, gpus
        self.threads = threads or cpus  # never more torch threads than the CPUs it holds
        self.artifacts = artifacts
        self.launch_timeout_s = launch_timeout_s
        self._jobs: dict[str, _Job] | None = None  # adopted on first use
        self._lock = threading.Lock()
        self._actor_class: Any = None

    def job_dir(self, job_id: str) -> Path:
        directory = job_directory(self.root, job_id)
        if directory is None:
            raise ValueError(f"not a training job id: {job_id!r}")
        return directory

    def _ray(self) -> Any:
        ray = self._connect()
        if self._actor_class is None:
            from enginehouse.providers.ray_training_actor import TrainingProcess

            # No restarts: a job whose actor died is failed by the supervisor, which says why.
            self._actor_class = ray.remote(max_restarts=0)(TrainingProcess)
        return ray

    # -- launch -------------------------------------------------------------------------------

    def launch(self, launch: TrainingLaunch) -> None:
        ray = self._ray()
        resources = training_resources(ray.nodes(), self.cpus, self.gpus)
        try:
            job_dir = self.job_dir(launch.job_id)
            job_dir.mkdir(parents=True, exist_ok=True)
            config = worker_config(launch, "", self.threads)  # the node chooses its output directory
            fetch = self._grant(launch.job_id, job_dir, config, ray)
        except (OSError, ValueError) as exc:
            raise LaunchError(f"cannot prepare the job's directory: {getattr(exc, 'strerror', None) or exc}",
                              permanent=True) from None
        try:
            handle = self._actor_class.options(name=f"{ACTOR_PREFIX}{launch.job_id}", lifetime="detached",
                                               **resources).remote(launch.job_id, config, fetch, NODE_JOB_ROOT)
            described = ray.get(handle.describe.remote(), timeout=self.launch_timeout_s)
        except ValueError as exc:  # the name is taken: this job already has an actor
            raise LaunchError(f"the job's Ray actor could not be made: {exc}", permanent=True) from None
        except ray.exceptions.GetTimeoutError:
            ray.kill(handle, no_restart=True)
            raise LaunchError(f"no node of the Ray cluster took the training job within "
                              f"{self.launch_timeout_s:g} s ({resources['num_cpus']} CPU(s), "
                              f"{resources['num_gpus']} GPU(s))", permanent=False) from None
        except ray.exceptions.RayError as exc:
            ray.kill(handle, no_restart=True)
            raise LaunchError(f"the job's Ray actor could not start: {first_line(exc)}", permanent=False) from None
        with self._lock:
            self._table()[launch.job_id] = _Job(launch.job_id, handle)
        log.info("started training job %s in a Ray actor on node %s", launch.job_id, described["node_id"])

    def _grant(self, job_id: str, job_dir: Path, config: dict[str, Any], ray: Any) -> dict[str, str] | None:
        """How the job's node fetches its files: a secret of the job's own, granted its paths."""
        if self.artifacts is None:
            return None
        secret = new_secret()
        write_grant(job_dir, secret, fetched_paths(config))
        return {"server_url": self.artifacts.url_for(str(ray.util.get_node_ip_address())), "secret": secret,
                "mode": self.artifacts.fetch, "routes": f"/v1/training-artifacts/{job_id}"}

    # -- list ---------------------------------------------------------------------------------

    def _table(self) -> dict[str, _Job]:
        """The jobs this provider has; call with the lock held. The first call adopts the
        training actors alive in the namespace (a previous server's)."""
        if self._jobs is None:
            self._jobs = {}
            for handle, described in adopt_actors(self._ray(), ACTOR_PREFIX, POLL_TIMEOUT_S):
                log.info("found training job %s in the Ray cluster, left by a previous server", described["job_id"])
                self._jobs[described["job_id"]] = _Job(described["job_id"], handle)
        return self._jobs

    def list(self) -> list[ProviderTraining]:
        ray = self._ray()
        with self._lock:
            jobs = list(self._table().values())
        self._poll([job for job in jobs if not job.gone], ray)
        return [self._training(job, ray) for job in jobs]

    @staticmethod
    def _poll(jobs: list[_Job], ray: Any) -> None:
        """Ask each actor, all at once, what its job reported; one that has not answered in
        time keeps its last answer (busy), one that is gone is marked so."""
        for job, state in answers(ray, {entry.handle.poll.remote(): entry for entry in jobs}, POLL_TIMEOUT_S):
            if state is GONE:
                job.gone = True
            else:
                job.state = state

    def _training(self, job: _Job, ray: Any) -> ProviderTraining:
        checkpoints, waiting = self._bring_back(job, ray)
        state = job.state
        ended = state.get("exit")
        exit_ = (ReplicaExit(code=None, reason=GONE_REASON, permanent=False) if job.gone
                 else ReplicaExit(code=ended[0], reason=ended[1], permanent=False) if ended else None)
        outcome = state.get("outcome")
        if exit_ is not None and waiting and not job.gone:
            exit_ = None  # not over for the server until its checkpoints are here
        elif job.gone and waiting:
            outcome = None  # what it trained is lost with it: not a success
        elif job.lost is not None and (outcome or {}).get("status") == "Success":
            outcome = {"status": "Failed", "reason": job.lost}
        return ProviderTraining(job.job_id, state.get("progress"), checkpoints, outcome, exit_, state.get("baseline"))

    def _bring_back(self, job: _Job, ray: Any) -> tuple[list[dict[str, Any]], bool]:
        """The reported checkpoints that are on the server (copying those that are not yet), with
        the server's paths; and whether some are still to come."""
        here: list[dict[str, Any]] = []
        for entry in job.state.get("checkpoints") or []:
            name = Path(str(entry.get("path", ""))).name
            if not name.startswith("checkpoint-"):
                continue  # not a checkpoint directory of the job's
            target = self.job_dir(job.job_id) / name
            if not target.is_dir():
                if job.failed_copies.get(name, 0) >= COPY_PASSES:
                    continue  # given up on: ``job.lost`` says why
                if job.gone or not self._copy(job, name, target, ray):
                    return here, True
            here.append({**entry, "path": str(target)})
        return here, False

    def _copy(self, job: _Job, name: str, target: Path, ray: Any) -> bool:
        def read(file_name: str, offset: int, length: int) -> bytes:
            return bytes(ray.get(job.handle.read.remote(name, file_name, offset, length), timeout=CALL_TIMEOUT_S))

        try:
            manifest = ray.get(job.handle.manifest.remote(name), timeout=CALL_TIMEOUT_S)
            copy_checkpoint(manifest, read, target)
        except ray.exceptions.RayActorError:
            job.gone = True
            return False
        except (CheckpointCopyError, OSError, ray.exceptions.RayError) as exc:
            failed = job.failed_copies[name] = job.failed_copies.get(name, 0) + 1
            log.warning("training job %s: %s could not be brought back (pass %d of %d): %s", job.job_id, name,
                        failed, COPY_PASSES, first_line(exc))
            if failed >= COPY_PASSES:
                job.lost = f"{name} could not be brought back from its node: {first_line(exc)}"
            return False
        log.info("training job %s: %s brought back to %s", job.job_id, name, target)
        return True

    # -- stop, release, logs ------------------------------------------------------------------

    def _find(self, job_id: str) -> _Job | None:
        """The job, this provider's, or (for a server that does not follow jobs) its live actor."""
        with self._lock:
            job = self._table().get(job_id)
        if job is not None:
            return job
        ray = self._ray()
        try:
            return _Job(job_id, ray.get_actor(f"{ACTOR_PREFIX}{job_id}"))
        except ValueError:
            return None

    def stop(self, job_id: str) -> None:
        with self._lock:
            job = self._table().get(job_id)
        if job is None or job.gone:
            return
        ray = self._ray()
        try:
            ray.get(job.handle.stop.remote(10.0), timeout=30)
        except ray.exceptions.RayError:
            pass  # gone already, or hung: releasing kills it

    def release(self, job_id: str) -> None:
        """Forget the job: its log is copied here, its grant revoked, its node's directory and
        actor removed. Its checkpoints, here already, stay."""
        with self._lock:
            job = self._table().pop(job_id, None)
        try:
            job_dir = self.job_dir(job_id)
        except ValueError:
            return
        revoke_grant(job_dir)
        if job is None or job.gone:
            return
        ray = self._ray()
        try:
            lines = ray.get(job.handle.log_tail.remote(KEPT_LOG_LINES), timeout=CALL_TIMEOUT_S)
            if lines is not None:
                (job_dir / LOG_FILE).write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
            ray.get(job.handle.remove.remote(), timeout=CALL_TIMEOUT_S)
        except (ray.exceptions.RayError, OSError) as exc:
            log.warning("training job %s: its log could not be kept: %s", job_id, first_line(exc))
        try:
            ray.kill(job.handle, no_restart=True)
        except ValueError:
            pass

    def log_tail(self, job_id: str, max_lines: int) -> list[str] | None:
        try:
            kept = self.job_dir(job_id) / LOG_FILE
        except ValueError:
            return None
        if kept.is_file():  # released: the log is here now
            return tail_lines(kept, max_lines)
        job = self._find(job_id)
        if job is None or job.gone:
            return None
        ray = self._ray()
        try:
            lines = ray.get(job.handle.log_tail.remote(max_lines), timeout=POLL_TIMEOUT_S)
        except ray.exceptions.RayError:
            return None
        return None if lines is None else list(lines)
