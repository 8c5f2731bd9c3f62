"""The runner shape shared by single-model task types: a ``ModelSlot`` for what is served and a
``BatchWorker`` for how requests run. Subclasses say how to open a model and which routes serve it.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, Generic, TypeVar

from fastapi import APIRouter

from enginehouse.runtime.base import ModelRunner, ReplicaLoadError, loaded
from enginehouse.runtime.metrics import ReplicaLoad
from enginehouse.runtime.options import RuntimeOptions
from enginehouse.runtime.single.batching import BatchWorker
from enginehouse.runtime.single.loading import ModelLoadError
from enginehouse.runtime.single.slot import ModelSlot, ServedModel

M = TypeVar("M")


class SingleModelRunner(ModelRunner, Generic[M]):
    # On a single-model engine the adapter endpoints mean "accepts one fine-tune": PUT loads a
    # full model directory in place of the base model, DELETE brings the base model back.
    serves_adapters = True

    def __init__(self, *, base_model: str, served_name: str, options: RuntimeOptions) -> None:
        super().__init__(base_model=base_model, served_name=served_name, options=options)
        self.worker = BatchWorker(max_batch_size=options.max_batch_size, metrics=self.metrics)
        self._slot: ModelSlot[M] | None = None

    # -- what a task type provides ----------------------------------------------------------

    @abstractmethod
    def open_base(self) -> M:
        """Load the base model (also to restore it after a fine-tune). Raises ``ModelLoadError``."""

    @abstractmethod
    def open_fine_tune(self, path: str) -> M:
        """Load a fine-tuned model directory, checked against the base model. Raises ``ModelLoadError``."""

    @abstractmethod
    def routes(self, slot: ModelSlot[M]) -> APIRouter:
        """The inference endpoints, serving whatever ``slot`` holds."""

    def describe(self, model: M) -> dict[str, Any]:
        """Task-specific ``/health`` fields of the model being served."""
        return {}

    # -- ModelRunner ----------------------------------------------------------------------

    def load(self) -> None:
        try:
            model = self.open_base()
        except ModelLoadError as exc:
            raise ReplicaLoadError(f"could not load base model '{self.base_model}': {exc}") from None
        base = ServedModel(self.served_name, self.base_model, model, fine_tuned=False)
        self._slot = ModelSlot(base, self.open_fine_tune, self.open_base)

    @property
    def slot(self) -> ModelSlot[M]:
        return loaded(self._slot)

    def start(self) -> None:
        self.worker.start()

    def stop(self) -> None:
        self.worker.stop()

    def router(self) -> APIRouter:
        return self.routes(self.slot)

    def served_models(self) -> list[tuple[str, str | None]]:
        # The base model steps aside while a fine-tune replaces it (one model at a time).
        current = self.slot.current
        return [(current.name, self.slot.base_name if current.fine_tuned else None)]

    def health(self) -> dict[str, Any]:
        running, waiting = self.worker.counts()
        snapshot = self.slot.snapshot()
        return {**snapshot, "running": running, "waiting": waiting, **self.describe(self.slot.current.model)}

    def load_report(self) -> ReplicaLoad:
        running, waiting = self.worker.counts()
        return ReplicaLoad(running=running, waiting=waiting)

    def load_adapter(self, name: str, path: str) -> dict[str, Any]:
        served = self.slot.load_fine_tune(name, path)
        return {"name": served.name, "status": "loaded", "path": served.path, "base_served": False}

    def unload_adapter(self, name: str) -> bool:
        return self.slot.restore_base(name)
