"""What every single-model endpoint does around its own work: resolve ``model`` against the slot,
tokenize off the event loop when the input is large, and batch the work."""

from __future__ import annotations

import asyncio
import copy
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from fastapi import APIRouter
from transformers import PreTrainedTokenizerBase

from enginehouse.runtime.single.batching import BatchWorker
from enginehouse.runtime.single.inputs import INLINE_TOKENIZE_CHARS
from enginehouse.runtime.single.slot import ModelSlot, ServedModel

M = TypeVar("M")
T = TypeVar("T")


class SingleModelServing(Generic[M]):
    def __init__(self, slot: ModelSlot[M], worker: BatchWorker) -> None:
        self.slot = slot
        self.worker = worker

    def router(self) -> APIRouter:
        router = APIRouter()
        return router

    def resolve(self, name: str) -> ServedModel[M]:
        return self.slot.resolve(name)


class Tokenizers:
    """A model's tokenizer for the event loop, and a copy for large inputs tokenized in worker
    threads: a fast tokenizer changes its own settings per call (truncation), so two threads
    must never use one at the same time."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.inline = tokenizer
        self._spare = copy.deepcopy(tokenizer)
        self._spare_lock = threading.Lock()

    async def run(self, texts: list[str], work: Callable[[PreTrainedTokenizerBase], T]) -> T:
        """``work(tokenizer)``: inline for a few sentences (microseconds); in a worker thread for a
        large input, which would otherwise hold up every other request on the event loop."""
        if sum(len(text) for text in texts) <= INLINE_TOKENIZE_CHARS:
            return work(self.inline)

        def spare() -> T:
            with self._spare_lock:
                return work(self._spare)

        return await asyncio.to_thread(spare)
