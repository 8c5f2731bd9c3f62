"""What the LoRA task types' runners share: one base model, many adapters in a registry behind
``PUT/DELETE /v1/adapters/{name}``, and one batching worker thread that serves them all."""

from __future__ import annotations

from typing import Any, Generic, Protocol, TypeVar

from fastapi import APIRouter

from enginehouse.errors import ConflictError, ValidationFailedError
from enginehouse.runtime.base import ModelRunner, loaded
from enginehouse.runtime.lora.peft_format import AdapterLoadError
from enginehouse.runtime.lora.registry import AdapterEntry, AdapterRegistry
from enginehouse.runtime.lora.slots import SlotTable
from enginehouse.runtime.metrics import ReplicaLoad
from enginehouse.runtime.options import RuntimeOptions


class BatchingWorker(Protocol):
    """The thread that runs the model over batches mixing adapters (an engine, a batcher)."""

    slots: SlotTable

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def counts(self) -> tuple[int, int]:
        """(running, waiting)."""
        ...


class Serving(Protocol):
    def router(self) -> APIRouter: ...


W = TypeVar("W", bound=BatchingWorker)
S = TypeVar("S", bound=Serving)


class LoRARunner(ModelRunner, Generic[W, S]):
    """Subclasses' ``load`` sets ``_worker``, ``_registry``, ``_serving`` and ``max_model_len``."""

    serves_adapters = True

    def __init__(self, *, base_model: str, served_name: str, options: RuntimeOptions) -> None:
        super().__init__(base_model=base_model, served_name=served_name, options=options)
        self._worker: W | None = None
        self._serving: S | None = None
        self._registry: AdapterRegistry | None = None
        self.max_model_len = 0

    @property
    def worker(self) -> W:
        return loaded(self._worker)

    @property
    def registry(self) -> AdapterRegistry:
        return loaded(self._registry)

    @property
    def serving(self) -> S:
        return loaded(self._serving)

    def start(self) -> None:
        self.worker.start()

    def stop(self) -> None:
        self.worker.stop()

    def router(self) -> APIRouter:
        return self.serving.router()

    def served_models(self) -> list[tuple[str, str | None]]:
        return [(self.served_name, None), *((name, self.served_name) for name in self.registry.loaded_names())]

    def health(self) -> dict[str, Any]:
        running, waiting = self.worker.counts()
        return {
            "adapters": self.registry.snapshot(),
            "running": running,
            "waiting": waiting,
            "max_model_len": self.max_model_len,
        }

    def load_report(self) -> ReplicaLoad:
        if self._worker is None or self._registry is None:
            return ReplicaLoad()
        running, waiting = self._worker.counts()
        # A slot may still hold an unloaded adapter's weights until it is reused: not counted.
        in_service = self._registry.loaded_ids()
        return ReplicaLoad(
            running=running,
            waiting=waiting,
            device_adapters=len(in_service.intersection(self._worker.slots.resident())),
            host_adapters=len(in_service.intersection(self._registry.host_resident())),
        )

    def load_adapter(self, name: str, path: str) -> dict[str, Any]:
        if name == self.served_name:
            raise ConflictError(f"'{name}' is the base model's served name; pick another adapter name")
        try:
            entry = self.registry.load(name, path)
            extra = self.describe_adapter(entry)
        except AdapterLoadError as exc:
            raise ValidationFailedError(str(exc), code="adapter_load_failed", param="path") from None
        return {"name": name, "status": entry.status, "path": entry.path, "rank": entry.rank, **extra}

    def describe_adapter(self, entry: AdapterEntry) -> dict[str, Any]:
        """Task-specific fields of a freshly loaded adapter's answer."""
        return {}

    def unload_adapter(self, name: str) -> bool:
        return self.registry.unload(name)
