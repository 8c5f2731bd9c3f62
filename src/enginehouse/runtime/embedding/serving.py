"""``POST /v1/embeddings`` on an embedding replica.

``dimensions: k`` keeps the first k dimensions of each embedding (Matryoshka-style, as OpenAI's
``dimensions``); when the model normalises its embeddings the shortened vector is normalised
again, so it stays unit length. Any model allows it; k above the model's dimension is a 400.
``encoding_format: base64`` sends each vector as its little-endian float32 bytes, base64-encoded.
"""

from __future__ import annotations

import base64

import torch
from fastapi import APIRouter, Request
from fastapi.responses import Response
from torch.nn import functional as F
from transformers import PreTrainedTokenizerBase

from enginehouse.errors import BadRequestError
from enginehouse.protocol.embeddings import EmbeddingData, EmbeddingRequest, EmbeddingResponse, EmbeddingUsage
from enginehouse.runtime.embedding.model import EmbeddingModel
from enginehouse.runtime.http import parse_body
from enginehouse.runtime.single.inputs import check_token_rows, encode_texts
from enginehouse.runtime.single.serving import SingleModelServing


class EmbeddingServing(SingleModelServing[EmbeddingModel]):
    def router(self) -> APIRouter:
        router = super().router()
        router.add_api_route("/v1/embeddings", self.embeddings, methods=["POST"])
        return router

    async def embeddings(self, request: Request) -> Response:
        body = await parse_body(request, EmbeddingRequest)
        served = self.resolve(body.model)
        model = served.model
        if body.dimensions is not None and body.dimensions > model.dimensions:
            raise BadRequestError(
                f"dimensions {body.dimensions} is larger than this model's {model.dimensions} dimensions",
                param="dimensions",
            )
        rows = await self._rows(model, body)
        vectors = await self.worker.run(model, rows, served.name)
        matrix = shorten(torch.stack(vectors), body.dimensions, renormalize=model.recipe.normalize)
        data = [EmbeddingData.model_construct(index=i, embedding=e, object="embedding")
                for i, e in enumerate(to_wire(matrix, as_base64=body.base64))]
        tokens = sum(len(row) for row in rows)
        answer = EmbeddingResponse.model_construct(
            object="list", data=data, model=body.model,
            usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens),
        )
        return Response(answer.model_dump_json(), media_type="application/json")

    async def _rows(self, model: EmbeddingModel, body: EmbeddingRequest) -> list[list[int]]:
        inputs = body.inputs()
        if not isinstance(inputs[0], str):
            rows = [list(item) for item in inputs if not isinstance(item, str)]
            return check_token_rows(rows, vocab_size=model.vocab_size, max_length=model.max_length,
                                    truncate=body.truncate)
        texts = [str(item) for item in inputs]
        if model.recipe.do_lower_case:
            texts = [text.lower() for text in texts]

        def encode(tokenizer: PreTrainedTokenizerBase) -> list[list[int]]:
            return encode_texts(tokenizer, texts, max_length=model.max_length, truncate=body.truncate).rows

        return await model.tokenizers.run(texts, encode)


def shorten(matrix: torch.Tensor, dimensions: int | None, *, renormalize: bool) -> torch.Tensor:
    """The first ``dimensions`` of each row, unit length again if the model's were."""
    if dimensions is None or dimensions >= matrix.shape[1]:
        return matrix
    matrix = matrix[:, :dimensions]
    return F.normalize(matrix, p=2, dim=-1) if renormalize else matrix


def to_wire(matrix: torch.Tensor, *, as_base64: bool) -> list[list[float]] | list[str]:
    array = matrix.float().numpy().astype("<f4", copy=False)
    if as_base64:
        return [base64.b64encode(row.tobytes()).decode("ascii") for row in array]
    return array.tolist()
