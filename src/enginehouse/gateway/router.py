"""OpenAI-compatible inference routes. Each one hands the raw body to the gateway service."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel
from starlette.responses import Response

from enginehouse.api.deps import OrgDep, SessionDep
from enginehouse.api.views import JsonResponse, models_body
from enginehouse.gateway.service import Gateway
from enginehouse.protocol.classification import ClassificationRequest, ClassificationResponse
from enginehouse.protocol.embeddings import EmbeddingRequest, EmbeddingResponse
from enginehouse.protocol.images import (
    DetectionRequest, DetectionResponse, ImageClassificationRequest, ImageClassificationResponse,
    ImageEmbeddingRequest, ImageEmbeddingResponse,
)
from enginehouse.protocol.ner import NerRequest, NerResponse
from enginehouse.protocol.openai import (
    ChatCompletionRequest, ChatCompletionResponse, CompletionRequest, CompletionResponse,
)
from enginehouse.services import deployments as deployment_service

router = APIRouter(tags=["inference"])


def _gateway(request: Request) -> Gateway:
    return request.app.state.gateway


def _forward_to(endpoint: str, request_model: type[BaseModel]):  # type: ignore[no-untyped-def]
    async def forward(request: Request, org: OrgDep) -> Response:
        # The raw bytes: the gateway validates them with ``request_model`` and forwards them as
        # they came, so FastAPI must not parse the body itself (api/openapi.py documents it).
        body = await request.body()
        return await _gateway(request).serve(request, org, endpoint, body, request_model)

    forward.__name__ = endpoint.removeprefix("/v1/").replace("-", "_").replace("/", "_")
    return forward


# Each endpoint: the request model its bodies are checked with (by the gateway, then again by the
# replica) and the model of its answer.
INFERENCE_ENDPOINTS: dict[str, tuple[type[BaseModel], type[BaseModel]]] = {
    "/v1/chat/completions": (ChatCompletionRequest, ChatCompletionResponse),
    "/v1/completions": (CompletionRequest, CompletionResponse),
    "/v1/embeddings": (EmbeddingRequest, EmbeddingResponse),
    "/v1/classification": (ClassificationRequest, ClassificationResponse),
    "/v1/ner": (NerRequest, NerResponse),
    "/v1/image-embeddings": (ImageEmbeddingRequest, ImageEmbeddingResponse),
    "/v1/image-classification": (ImageClassificationRequest, ImageClassificationResponse),
    "/v1/detections": (DetectionRequest, DetectionResponse),
}
for _path, (_request_model, _) in INFERENCE_ENDPOINTS.items():
    router.add_api_route(_path, _forward_to(_path, _request_model), methods=["POST"])


@router.get("/v1/models")
def list_models(session: SessionDep, org: OrgDep) -> Response:
    # Every callable deployment in one answer (no pages): OpenAI clients read the list whole.
    return JsonResponse(models_body(deployment_service.list_models(session, org)))
