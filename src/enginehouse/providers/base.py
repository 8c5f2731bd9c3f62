"""The provider interface: which deployment options it can give, and start, observe and stop
replica processes on them. Nothing else."""

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
    runtime_options: dict[str, Any] = field(default_factory=dict)
    # The option the engine was placed on (one of the provider's ``deployment_options``).
    deployment_option: str | None = None


@dataclass(frozen=True)
class LaunchedReplica:
    replica_id: str
    url: str
    pid: int | None
    log_path: str | None


@dataclass(frozen=True)
class ReplicaExit:
    """A replica process that is gone: its exit code and, when it said why, the reason."""

    code: int | None
    reason: str | None
    permanent: bool  # True when the replica itself declared the failure (bad model, bad options)


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

    def exit_status(self, replica_id: str, pid: int | None, log_path: str | None) -> ReplicaExit | None:
        """None while the replica's process runs; how it ended otherwise."""
        ...

    def stop(self, replica_id: str, pid: int | None, grace_s: float = 5.0) -> None: ...

    def stop_all(self) -> None:
        """Stop every replica this provider started in this server process (shutdown)."""
        ...
