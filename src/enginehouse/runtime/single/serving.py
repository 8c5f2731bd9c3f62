"""What every single-model endpoint does around its own work: resolve ``model`` against the slot
and batch the work (large inputs are tokenized off the event loop: ``runtime.tokenizing``)."""

from __future__ import annotations

from typing import Generic, TypeVar

from fastapi import APIRouter

from enginehouse.runtime.single.batching import BatchWorker
from enginehouse.runtime.single.slot import ModelSlot, ServedModel

M = TypeVar("M")


class SingleModelServing(Generic[M]):
    def __init__(self, slot: ModelSlot[M], worker: BatchWorker) -> None:
        self.slot = slot
        self.worker = worker

    def router(self) -> APIRouter:
        router = APIRouter()
        return router

    def resolve(self, name: str) -> ServedModel[M]:
        return self.slot.resolve(name)
