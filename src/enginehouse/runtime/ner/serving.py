"""``POST /v1/ner`` on an NER replica: tokens with character offsets through the batch worker,
then per-token labels grouped into entities (``entities.group_entities``)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from transformers import PreTrainedTokenizerBase

from enginehouse.errors import ConflictError
from enginehouse.protocol.ner import NerEntity, NerRequest, NerResponse, NerResult, NerUsage
from enginehouse.runtime.http import parse_body
from enginehouse.runtime.ner.entities import group_entities
from enginehouse.runtime.ner.model import NerModel, TokenPredictions
from enginehouse.runtime.single.inputs import EncodedTexts, encode_texts
from enginehouse.runtime.single.serving import SingleModelServing


class NerServing(SingleModelServing[NerModel]):
    def router(self) -> APIRouter:
        router = super().router()
        router.add_api_route("/v1/ner", self.ner, methods=["POST"])
        return router

    async def ner(self, request: Request) -> Response:
        body = await parse_body(request, NerRequest)
        served = self.resolve(body.model)
        model = served.model
        if model.unavailable is not None:
            raise ConflictError(model.unavailable, code="no_token_classification_head", param="model")
        texts = body.inputs()

        def encode(tokenizer: PreTrainedTokenizerBase) -> EncodedTexts:
            return encode_texts(tokenizer, texts, max_length=model.max_length, truncate=body.truncate,
                                with_offsets=True)

        encoded = await model.tokenizers.run(texts, encode)
        predictions: list[TokenPredictions] = await self.worker.run(model, encoded.rows, served.name)
        data = [NerResult(index=i, entities=self._entities(model, texts[i], encoded, i, predictions[i]))
                for i in range(len(texts))]
        tokens = encoded.token_count
        answer = NerResponse(model=body.model, data=data, usage=NerUsage(prompt_tokens=tokens, total_tokens=tokens))
        return Response(answer.model_dump_json(), media_type="application/json")

    @staticmethod
    def _entities(model: NerModel, text: str, encoded: EncodedTexts, row: int,
                  predicted: TokenPredictions) -> list[NerEntity]:
        assert encoded.offsets is not None and encoded.word_ids is not None and encoded.special is not None
        labels = [model.labels[i] for i in predicted.label_ids]
        found = group_entities(text, labels, predicted.scores, encoded.offsets[row], encoded.word_ids[row],
                               encoded.special[row])
        return [NerEntity(text=e.text, label=e.label, start=e.start, end=e.end, score=e.score) for e in found]
