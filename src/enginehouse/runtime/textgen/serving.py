"""The OpenAI endpoints of a text-generation replica, on top of the batching engine.

A handler validates the body, resolves ``model`` (the served name is the base model, any other
name an adapter), turns messages/prompts into token ids, checks them against the context, submits
one engine request per prompt and answers in one piece or as server-sent events.
"""

from __future__ import annotations


from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from enginehouse.disconnect import unless_client_leaves
from enginehouse.errors import BadRequestError
from enginehouse.protocol.openai import (
    ChatCompletionRequest,
    CompletionRequest,
    new_chat_completion_id,
    new_completion_id,
)
from enginehouse.protocol.sampling import SamplingParams
from enginehouse.runtime.http import parse_body, sse_response
from enginehouse.runtime.lora.registry import AdapterHandle, AdapterRegistry
from enginehouse.runtime.metrics import ReplicaMetrics
from enginehouse.runtime.textgen.responses import chat_body, chat_stream, completion_body, completion_stream
from enginehouse.runtime.textgen.runs import GenerationRun
from enginehouse.runtime.textgen.scheduler import TextGenerationEngine
from enginehouse.runtime.textgen.tokenizer import ChatTemplateError, SafeTokenizer

# OpenAI's default for /v1/completions.
DEFAULT_COMPLETION_MAX_TOKENS = 16
# Chat has no documented default; the rest of the context would let one request occupy a CPU
# replica for minutes, so an absent max_tokens means at most this many.
DEFAULT_CHAT_MAX_TOKENS = 256


class TextGenerationServing:
    def __init__(
        self,
        *,
        engine: TextGenerationEngine,
        tokenizer: SafeTokenizer,
        registry: AdapterRegistry,
        served_name: str,
        max_model_len: int,
        vocab_size: int,
        metrics: ReplicaMetrics | None = None,
    ) -> None:
        self.engine = engine
        self.tokenizer = tokenizer
        self.registry = registry
        self.served_name = served_name
        self.max_model_len = max_model_len
        self.vocab_size = vocab_size
        self.metrics = metrics

    def router(self) -> APIRouter:
        router = APIRouter()
        router.add_api_route("/v1/completions", self.completions, methods=["POST"])
        router.add_api_route("/v1/chat/completions", self.chat_completions, methods=["POST"])
        return router

    async def completions(self, request: Request) -> Response:
        body = await parse_body(request, CompletionRequest)
        adapter = await self.resolve_model(body.model)
        prompts = [self._prompt_ids(p) for p in body.prompts()]
        params = self._params_per_prompt(
            prompts, body.to_sampling_params(), DEFAULT_COMPLETION_MAX_TOKENS, "prompt"
        )
        run = self._start(prompts, params, adapter)
        answer = {"response_id": new_completion_id(), "model": body.model}
        if body.stream:
            return sse_response(completion_stream(run, include_usage=body.include_usage, **answer), on_close=run.close)
        result = await unless_client_leaves(request, run.collect())
        return JSONResponse(completion_body(result, prompt_tokens=run.prompt_tokens, **answer))

    async def chat_completions(self, request: Request) -> Response:
        body = await parse_body(request, ChatCompletionRequest)
        adapter = await self.resolve_model(body.model)
        prompt = self._chat_prompt_ids(body)
        params = self._params_per_prompt(
            [prompt], body.to_sampling_params(), DEFAULT_CHAT_MAX_TOKENS, "messages"
        )
        run = self._start([prompt], params, adapter)
        answer = {"response_id": new_chat_completion_id(), "model": body.model}
        if body.stream:
            return sse_response(chat_stream(run, include_usage=body.include_usage, **answer), on_close=run.close)
        result = await unless_client_leaves(request, run.collect())
        return JSONResponse(chat_body(result, prompt_tokens=run.prompt_tokens, **answer))

    async def resolve_model(self, name: str) -> AdapterHandle | None:
        """None for the base model, the adapter's handle otherwise; 404 when unknown."""
        if name == self.served_name:
            return None
        return await self.registry.resolve(name)

    def _start(
        self, prompts: list[list[int]], params: list[SamplingParams], adapter: AdapterHandle | None
    ) -> GenerationRun:
        # Leaving early (client gone, handler cancelled) aborts the run: see GenerationRun.events.
        deployment = self.served_name if adapter is None else adapter.name
        run = GenerationRun(self.engine, prompts, params, adapter, deployment=deployment, metrics=self.metrics)
        run.start()
        return run

    def _prompt_ids(self, prompt: str | list[int]) -> list[int]:
        if isinstance(prompt, str):
            ids = self.tokenizer.encode(prompt)
        else:
            bad = next((t for t in prompt if t >= self.vocab_size), None)
            if bad is not None:
                raise BadRequestError(
                    f"token id {bad} is out of range for this model (vocabulary size {self.vocab_size})",
                    param="prompt",
                )
            ids = list(prompt)
        if not ids:
            raise BadRequestError("the prompt is empty", param="prompt")
        return ids

    def _chat_prompt_ids(self, body: ChatCompletionRequest) -> list[int]:
        if any(message.has_images for message in body.messages):
            raise BadRequestError(
                "this model takes text only; image_url content needs a vlm-generation engine",
                param="messages",
            )
        if not self.tokenizer.has_chat_template:
            raise BadRequestError(
                f"the model '{self.served_name}' has no chat template, so it cannot take chat "
                "messages; use /v1/completions with a plain prompt",
                param="messages",
                code="no_chat_template",
            )
        messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        try:
            text = self.tokenizer.render_chat(messages)
        except ChatTemplateError as exc:
            raise BadRequestError(str(exc), param="messages") from None
        # The template already wrote the special tokens (BOS) it wants.
        return self.tokenizer.encode(text, add_special_tokens=False)

    def _params_per_prompt(
        self, prompts: list[list[int]], params: SamplingParams, default_max_tokens: int, prompt_field: str
    ) -> list[SamplingParams]:
        if params.n > self.engine.config.max_batch_size:
            raise BadRequestError(
                f"n={params.n} exceeds this engine's max_batch_size {self.engine.config.max_batch_size}",
                param="n",
            )
        resolved = []
        limit = self.max_model_len
        for prompt in prompts:
            room = limit - len(prompt)
            if room < 1:
                raise BadRequestError(
                    f"the prompt is {len(prompt)} tokens long, but this model's maximum context length "
                    f"is {limit} tokens, leaving no room for a completion; shorten the prompt",
                    param=prompt_field,
                    code="context_length_exceeded",
                )
            if params.max_tokens is None:
                resolved.append(params.with_max_tokens(min(default_max_tokens, room)))
            elif params.max_tokens > room:
                total = len(prompt) + params.max_tokens
                raise BadRequestError(
                    f"this model's maximum context length is {limit} tokens, but {total} were requested "
                    f"({len(prompt)} in the prompt, {params.max_tokens} for the completion); "
                    "reduce the prompt or max_tokens",
                    param="max_tokens",
                    code="context_length_exceeded",
                )
            else:
                resolved.append(params)
        return resolved
