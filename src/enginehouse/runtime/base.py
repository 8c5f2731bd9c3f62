"""What every replica runs: one ``ModelRunner`` per task type behind one HTTP server.

A runner loads its model before the server starts (a failure becomes a ``ReplicaLoadError`` and
the process exits with a message the user can act on), starts and stops its background work with
the server, reports health, contributes its inference routes, and for LoRA task types manages
adapters. ``server.create_app`` is the only consumer.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from fastapi import APIRouter

from enginehouse.core.model_names import looks_like_local_path
from enginehouse.errors import BadRequestError
from enginehouse.runtime.metrics import ReplicaLoad, ReplicaMetrics
from enginehouse.runtime.options import RuntimeOptions


T = TypeVar("T")


def loaded(part: T | None) -> T:
    """A part of a runner that ``load()`` sets up; asking for it before is a programming error."""
    if part is None:
        raise RuntimeError("load() first")
    return part


class ReplicaLoadError(Exception):
    """The replica cannot come up; the message is shown to the user as the engine's reason."""


def check_local_base_model(base_model: str) -> None:
    """Something that can only be a path but is not there: say so, rather than let the Hub
    client report a confusing "repo id" error."""
    if looks_like_local_path(base_model) and not Path(base_model).expanduser().exists():
        raise ReplicaLoadError(f"base model directory {base_model} does not exist")


class ModelRunner(ABC):
    task_type: ClassVar[str]
    # LoRA task types hold many adapters over one base model (PUT/DELETE /v1/adapters/{name});
    # single-model task types accept, through the same endpoints, one fine-tune in its place.
    serves_adapters: ClassVar[bool] = False

    def __init__(self, *, base_model: str, served_name: str, options: RuntimeOptions) -> None:
        self.base_model = base_model
        self.served_name = served_name
        self.options = options
        # Per runner, not process-global: each app serves its own runner's series.
        self.metrics = ReplicaMetrics(self.load_report, self.step_report)

    @abstractmethod
    def load(self) -> None:
        """Load the model (slow, blocking). Raises ``ReplicaLoadError``."""

    def start(self) -> None:
        """Start background work (an engine thread); called when the server starts."""

    def stop(self) -> None:
        """Stop background work; called when the server shuts down."""

    @abstractmethod
    def router(self) -> APIRouter:
        """The inference endpoints of this task type."""

    def served_models(self) -> list[tuple[str, str | None]]:
        """``(name, parent)`` of every model this replica answers for, for ``GET /v1/models``;
        a fine-tune names the base model it runs on as its parent."""
        return [(self.served_name, None)]

    def health(self) -> dict[str, Any]:
        """Task-specific fields merged into ``GET /health``."""
        return {}

    def load_report(self) -> ReplicaLoad:
        """What the replica holds now, for the metrics' gauges (read at scrape time)."""
        return ReplicaLoad()

    def step_report(self) -> dict[str, float] | None:
        """Where the batching engine's time went so far (``runtime/textgen/timers.py``), for the
        metrics' step series; None for a runner without one."""
        return None

    def load_adapter(self, name: str, path: str) -> dict[str, Any]:
        """Load an adapter (blocking; the server runs it in a worker thread)."""
        raise BadRequestError(f"task type {self.task_type} does not serve adapters")

    def unload_adapter(self, name: str) -> bool:
        raise BadRequestError(f"task type {self.task_type} does not serve adapters")
