"""The NER model runner: one token-classification model at a time, requests batched."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from enginehouse.runtime.ner.model import BaseTraits, NerModel, open_ner_model
from enginehouse.runtime.ner.serving import NerServing
from enginehouse.runtime.single.runner import SingleModelRunner
from enginehouse.runtime.single.slot import ModelSlot


class NerRunner(SingleModelRunner[NerModel]):
    task_type = "ner"
    _base: BaseTraits | None = None

    def open_base(self) -> NerModel:
        model = open_ner_model(self.base_model, self.options)
        self._base = model.traits()
        return model

    def open_fine_tune(self, path: str) -> NerModel:
        assert self._base is not None, "the base model loads first"
        return open_ner_model(path, self.options, base=self._base)

    def routes(self, slot: ModelSlot[NerModel]) -> APIRouter:
        return NerServing(slot, self.worker).router()

    def describe(self, model: NerModel) -> dict[str, Any]:
        return model.describe()
