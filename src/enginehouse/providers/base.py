"""The provider interface: which deployment options it can give, launch, list and stop replicas
on them, and run fine-tuning jobs. Nothing else: no process ids, ports or log files cross it, so a
provider that runs replicas elsewhere (a cluster) implements the same methods."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from enginehouse.core.options import DeploymentOption


@dataclass(frozen=True)
class ReplicaLaunch:
    """Everything a provider needs to start one replica of an engine."""

    replica_id: str
    engine_id: str
    served_name: str
    task_type: str
    base_model: str
    # What the replica must demand of every caller (``enginehouse.replicaauth``). The provider
    # hands it to the replica without exposing it to other users of the machine (not argv).
    secret: str = field(repr=False)
    runtime_options: dict[str, Any] = field(default_factory=dict)
    # The option the engine was placed on (one of the provider's ``deployment_options``).
    deployment_option: str | None = None


@dataclass(frozen=True)
class LaunchedReplica:
    replica_id: str
    url: str  # where the gateway and the health checks reach it


@dataclass(frozen=True)
class ReplicaExit:
    """A replica that is gone: its exit code when known and, when it said why, the reason."""

    code: int | None
    reason: str | None
    permanent: bool  # True when the replica itself declared the failure (bad model, bad options)


@dataclass(frozen=True)
class ProviderReplica:
    """A replica as its provider sees it: where it answers and whether it still runs."""

    replica_id: str
    engine_id: str
    url: str
    exit: ReplicaExit | None = None  # None while it runs

    @property
    def running(self) -> bool:
        return self.exit is None


@dataclass(frozen=True)
class TrainingLaunch:
    """Everything a provider needs to run one fine-tuning job (``enginehouse.training``'s
    config, less where its output goes: the provider chooses that)."""

    job_id: str
    task_type: str
    base_model: str
    train_path: str | None  # None for a zero-shot build
    test_path: str | None
    train_test_split_ratio: float | None
    parameters: dict[str, Any] = field(default_factory=dict)
    # An experiment's version 1: no training, a checkpoint built from the class descriptions
    # ({"mode", "classes"}).
    zero_shot: dict[str, Any] | None = None
    # A checkpoint whose head starts the training, and one to test beside the result.
    init_checkpoint: str | None = None
    baseline_checkpoint: str | None = None


@dataclass(frozen=True)
class ProviderTraining:
    """A fine-tuning job as its provider sees it: what its worker reported so far (the
    ``enginehouse.training.report`` files) and whether it still runs."""

    job_id: str
    progress: dict[str, Any] | None
    checkpoints: list[dict[str, Any]]
    outcome: dict[str, Any] | None  # {"status": "Success" | "Failed" | "Cancelled", "reason"?}
    exit: ReplicaExit | None = None  # None while it runs
    baseline: dict[str, Any] | None = None  # {"test_results": {...}} of the baseline checkpoint

    @property
    def running(self) -> bool:
        return self.exit is None


class LaunchError(Exception):
    """A replica could not be started. ``permanent`` when starting it again cannot help (what
    the engine asks for can never run, e.g. a base model path no process can be given)."""

    def __init__(self, reason: str, *, permanent: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


class ReplicaProvider(Protocol):
    def deployment_options(self) -> list[DeploymentOption]:
        """The shapes this provider can start a replica on now. Asked on every reconcile step and
        every engine creation, so it answers from memory."""
        ...

    def launch(self, launch: ReplicaLaunch) -> LaunchedReplica:
        """Start a replica; raises ``LaunchError`` when it cannot."""
        ...

    def list_replicas(self, engine_id: str | None = None) -> list[ProviderReplica]:
        """The replicas this provider has (one engine's, or all), running or exited, including
        those a previous server process launched. Asked on every reconcile step, so it is cheap.
        An exited replica stays listed until it is stopped."""
        ...

    def stop(self, replica_id: str, grace_s: float = 5.0) -> None:
        """End the replica (if it still runs) and forget it. Unknown ids are ignored."""
        ...

    def stop_all(self) -> None:
        """Stop every replica this provider has (shutdown)."""
        ...

    def replica_log(self, replica_id: str, max_lines: int) -> list[str] | None:
        """The last ``max_lines`` lines of a replica's log, read wherever the replica runs; None
        when there is none (an unknown replica, or one whose node is gone)."""
        ...

    def launch_training(self, launch: TrainingLaunch) -> None:
        """Start a fine-tuning job's worker; raises ``LaunchError`` when it cannot."""
        ...

    def list_trainings(self) -> list[ProviderTraining]:
        """The fine-tuning jobs this provider has, running or ended, including those a previous
        server process started, with what each reported. A job stays listed until released."""
        ...

    def stop_training(self, job_id: str) -> None:
        """End a job's worker if it still runs; its checkpoints stay. Unknown ids are ignored."""
        ...

    def release_training(self, job_id: str) -> None:
        """Forget a job once its outcome is recorded (its checkpoints and log stay)."""
        ...

    def training_log(self, job_id: str, max_lines: int) -> list[str] | None:
        """The last ``max_lines`` lines of a job's log; None when there is none."""
        ...
