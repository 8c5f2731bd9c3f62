"""OpenAI-compatible inference routes. Each one hands the raw body to the gateway service."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from enginehouse.api.deps import OrgDep, SessionDep
from enginehouse.api.views import JsonResponse, models_body
from enginehouse.gateway.service import Gateway
from enginehouse.protocol.classification import ClassificationRequest
from enginehouse.protocol.embeddings import EmbeddingRequest
from enginehouse.protocol.images import DetectionRequest, ImageClassificationRequest, ImageEmbeddingRequest
from enginehouse.protocol.ner import NerRequest
from enginehouse.protocol.openai import ChatCompletionRequest, CompletionRequest
from enginehouse.services import deployments as deployment_service

router = APIRouter(tags=["inference"])


class AnyModelRequest(BaseModel):
    """The least every inference body has: which deployment it is for."""

    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1)


def _gateway(request: Request) -> Gateway:
    return request.app.state.gateway


@router.post("/v1/chat/completions")
async def chat_completions(request: Request, org: OrgDep) -> Response:
    body = await request.body()
    return await _gateway(request).serve(request, org, "/v1/chat/completions", body, ChatCompletionRequest)


@router.post("/v1/completions")
async def completions(request: Request, org: OrgDep) -> Response:
    body = await request.body()
    return await _gateway(request).serve(request, org, "/v1/completions", body, CompletionRequest)


def _forward_to(endpoint: str, request_model: type[BaseModel]):  # type: ignore[no-untyped-def]
    async def forward(request: Request, org: OrgDep) -> Response:
        body = await request.body()
        return await _gateway(request).serve(request, org, endpoint, body, request_model)

    return forward


# The other task types' endpoints: bodies are checked with the endpoint's own request model
# (the image endpoints only need a model name until their task types are served).
_ENDPOINT_MODELS: dict[str, type[BaseModel]] = {
    "/v1/embeddings": EmbeddingRequest,
    "/v1/classification": ClassificationRequest,
    "/v1/ner": NerRequest,
    "/v1/image-embeddings": ImageEmbeddingRequest,
    "/v1/image-classification": ImageClassificationRequest,
    "/v1/detections": DetectionRequest,
}
for _path, _model in _ENDPOINT_MODELS.items():
    router.add_api_route(_path, _forward_to(_path, _model), methods=["POST"], include_in_schema=False)


@router.get("/v1/models")
def list_models(session: SessionDep, org: OrgDep) -> Response:
    # Every callable deployment in one answer (no pages): OpenAI clients read the list whole.
    return JsonResponse(models_body(deployment_service.list_models(session, org)))
