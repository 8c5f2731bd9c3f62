"""``POST /v1/classification`` of a classification or regression replica.

A handler validates the body, resolves ``model`` (the served name is the base model, any other
name an adapter), tokenizes and length-checks the inputs, hands them to the batcher and answers
with each input's scores under its deployment's own labels.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import torch
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from transformers import PreTrainedTokenizerBase

from enginehouse.errors import BadRequestError, ConflictError, EnginehouseError
from enginehouse.protocol.classification import (
    ClassificationData,
    ClassificationRequest,
    ClassificationResponse,
    ClassificationUsage,
    new_classification_id,
)
from enginehouse.runtime.classify.batcher import ClassificationBatcher, ClassificationFailed, ClassifyRequest
from enginehouse.runtime.classify.labels import HeadSpec
from enginehouse.runtime.http import parse_body
from enginehouse.runtime.lora.registry import AdapterHandle, AdapterRegistry
from enginehouse.runtime.metrics import STATUS_ABORTED, STATUS_ERROR, STATUS_OK, ReplicaMetrics, RequestRecord
from enginehouse.runtime.single.inputs import encode_texts
from enginehouse.runtime.tokenizing import TokenizerThreads


@dataclass(frozen=True)
class BaseHead:
    """What the base deployment answers with: its head's labels, or why it cannot answer."""

    spec: HeadSpec | None
    reason: str | None = None

    def describe(self) -> dict[str, object]:
        if self.spec is None:
            return {"status": "unavailable", "reason": self.reason}
        return {"status": "ready", "labels": list(self.spec.labels), "problem": self.spec.kind}


class ClassificationServing:
    def __init__(
        self,
        *,
        batcher: ClassificationBatcher,
        tokenizers: TokenizerThreads[PreTrainedTokenizerBase],
        registry: AdapterRegistry,
        served_name: str,
        base_head: BaseHead,
        max_model_len: int,
        metrics: ReplicaMetrics | None = None,
    ) -> None:
        self.batcher = batcher
        self.tokenizers = tokenizers
        self.registry = registry
        self.served_name = served_name
        self.base_head = base_head
        self.max_model_len = max_model_len
        self.metrics = metrics

    def router(self) -> APIRouter:
        router = APIRouter()
        router.add_api_route("/v1/classification", self.classification, methods=["POST"])
        return router

    async def classification(self, request: Request) -> JSONResponse:
        arrival = time.monotonic()
        body = await parse_body(request, ClassificationRequest)
        adapter, spec = await self.resolve_model(body.model)
        if body.data_format == "probs" and spec.kind == "regression":
            raise BadRequestError(
                f"'{body.model}' is a regression model: it answers a value, not probabilities; "
                "use data_format 'logits'",
                param="data_format",
            )
        if body.input is None:  # the request model lets image-only bodies through for vlm-classification
            raise BadRequestError("input is required: this is a text classification model", param="input")
        rows = await self.encode(body.inputs(), body.wants_truncation)
        job = ClassifyRequest(rows, adapter, spec, arrival=arrival)
        self.batcher.submit(job)
        logits = await self._wait(job, adapter)
        response = ClassificationResponse(
            id=new_classification_id(),
            model=body.model,
            data=[
                ClassificationData(index=i, **{body.data_format: scores})
                for i, scores in enumerate(spec.present(logits, body.data_format))
            ],
            usage=ClassificationUsage(prompt_tokens=_tokens(rows), total_tokens=_tokens(rows)),
        )
        return JSONResponse(response.to_body())

    async def resolve_model(self, name: str) -> tuple[AdapterHandle | None, HeadSpec]:
        """(None, the base head) for the base model, the adapter's handle and head otherwise."""
        if name == self.served_name:
            if self.base_head.spec is None:
                raise ConflictError(str(self.base_head.reason), code="no_classification_head", param="model")
            return None, self.base_head.spec
        handle = await self.registry.resolve(name)
        return handle, handle.weights.spec  # type: ignore[attr-defined]

    async def encode(self, texts: list[str], truncate: bool) -> list[list[int]]:
        """Token rows of ``texts``, held to the model's maximum length (off the event loop when long)."""

        def work(tokenizer: PreTrainedTokenizerBase) -> list[list[int]]:
            return encode_texts(tokenizer, texts, max_length=self.max_model_len, truncate=truncate).rows

        return await self.tokenizers.run(texts, work)

    async def _wait(self, job: ClassifyRequest, adapter: AdapterHandle | None) -> torch.Tensor:
        status = STATUS_ERROR
        try:
            logits = await asyncio.wrap_future(job.future)
            status = STATUS_OK
            return logits
        except asyncio.CancelledError:
            status = STATUS_ABORTED
            raise
        except ClassificationFailed as exc:
            raise EnginehouseError(str(exc), code="engine_error") from None
        finally:
            self._record(job, adapter, status)

    def _record(self, job: ClassifyRequest, adapter: AdapterHandle | None, status: str) -> None:
        if self.metrics is None:
            return
        deployment = self.served_name if adapter is None else adapter.name
        self.metrics.record(RequestRecord(
            deployment=deployment, status=status, prompt_tokens=_tokens(job.rows), generation_tokens=0,
            arrival=job.arrival, finished=time.monotonic(), admitted=job.admitted,
        ))


def _tokens(rows: list[list[int]]) -> int:
    return sum(len(row) for row in rows)
