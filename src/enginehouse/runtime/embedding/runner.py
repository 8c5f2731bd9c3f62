"""The embedding model runner: one text encoder at a time, requests batched into padded forwards."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from enginehouse.runtime.embedding.model import BaseTraits, EmbeddingModel, open_embedding_model
from enginehouse.runtime.embedding.serving import EmbeddingServing
from enginehouse.runtime.single.runner import SingleModelRunner
from enginehouse.runtime.single.slot import ModelSlot


class EmbeddingRunner(SingleModelRunner[EmbeddingModel]):
    task_type = "embedding"
    _base: BaseTraits | None = None

    def open_base(self) -> EmbeddingModel:
        model = open_embedding_model(self.base_model, self.options)
        self._base = model.traits()
        return model

    def open_fine_tune(self, path: str) -> EmbeddingModel:
        assert self._base is not None, "the base model loads first"
        return open_embedding_model(path, self.options, base=self._base)

    def routes(self, slot: ModelSlot[EmbeddingModel]) -> APIRouter:
        return EmbeddingServing(slot, self.worker).router()

    def describe(self, model: EmbeddingModel) -> dict[str, Any]:
        return model.describe()
