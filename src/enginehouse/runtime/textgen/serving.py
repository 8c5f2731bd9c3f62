"""The OpenAI endpoints of a text-generation replica, on top of the batching engine.

A handler validates the body, resolves ``model`` (the served name is the base model, any other
name an adapter), turns messages/prompts into token ids (in a worker thread, and never more of a
prompt than its context can hold: a long prompt must not stall the replica), checks what the model cannot honour (context length, token ids,
a schema the grammar engine cannot enforce), submits one engine request per prompt and answers
in one piece or as server-sent events.
"""

from __future__ import annotations

import asyncio

import llguidance
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from enginehouse.disconnect import unless_client_leaves
from enginehouse.errors import BadRequestError
from enginehouse.protocol.openai import ChatCompletionRequest, CompletionRequest
from enginehouse.protocol.responses import new_chat_completion_id, new_completion_id
from enginehouse.protocol.sampling import Guide, SamplingParams
from enginehouse.protocol.structured import forced_tool
from enginehouse.runtime.http import parse_body, sse_response
from enginehouse.runtime.lora.registry import AdapterHandle, AdapterRegistry
from enginehouse.runtime.metrics import ReplicaMetrics
from enginehouse.runtime.tokenizing import encode_bounded
from enginehouse.runtime.textgen.chat_responses import ChatShape, ToolCalling, chat_body, chat_stream
from enginehouse.runtime.textgen.grammar import GrammarEngine, GrammarError
from enginehouse.runtime.textgen.responses import CompletionShape, TokenRenderer, completion_body, completion_stream
from enginehouse.runtime.textgen.runs import GenerationRun
from enginehouse.runtime.textgen.scheduler import TextGenerationEngine
from enginehouse.runtime.textgen.tokenizer import ChatTemplateError, SafeTokenizer
from enginehouse.runtime.textgen.tool_calls import detect_format

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
        grammar: GrammarEngine | None = None,
        no_grammar_reason: str | None = None,
    ) -> None:
        self.engine = engine
        self.tokenizer = tokenizer
        self.registry = registry
        self.served_name = served_name
        self.max_model_len = max_model_len
        self.vocab_size = vocab_size
        self.metrics = metrics
        self.grammar = grammar
        self.no_grammar_reason = no_grammar_reason or "structured output is unavailable for this model"
        self.tool_format = detect_format(tokenizer.chat_template)
        self.renderer = TokenRenderer(tokenizer.token_text, self._token_bytes)

    def router(self) -> APIRouter:
        router = APIRouter()
        router.add_api_route("/v1/completions", self.completions, methods=["POST"])
        router.add_api_route("/v1/chat/completions", self.chat_completions, methods=["POST"])
        return router

    async def completions(self, request: Request) -> Response:
        body = await parse_body(request, CompletionRequest)
        adapter = await self.resolve_model(body.model)
        prompts = [await asyncio.to_thread(self._prompt_ids, p) for p in body.prompts()]
        sampling = self._checked(body.to_sampling_params())
        params = self._params_per_prompt(prompts, sampling, DEFAULT_COMPLETION_MAX_TOKENS, "prompt")
        grammar = await self._compile(sampling.guide, "response_format")
        echo = None
        if body.echo:
            echo = [p if isinstance(p, str) else self.tokenizer.decode(p) for p in body.prompts()]
        shape = CompletionShape(
            new_completion_id(), body.model, sampling.n, echo, self.renderer if body.logprobs is not None else None
        )
        run = self._start(prompts, params, adapter, grammar)
        if body.stream:
            return sse_response(completion_stream(run, shape, body.include_usage), on_close=run.close)
        result = await unless_client_leaves(request, run.collect())
        return JSONResponse(completion_body(result, shape, run.prompt_tokens))

    async def chat_completions(self, request: Request) -> Response:
        body = await parse_body(request, ChatCompletionRequest)
        adapter = await self.resolve_model(body.model)
        tools = self._tool_calling(body)
        prompt = await asyncio.to_thread(self._chat_prompt_ids, body)
        sampling = self._checked(body.to_sampling_params())
        params = self._params_per_prompt([prompt], sampling, DEFAULT_CHAT_MAX_TOKENS, "messages")
        grammar = await self._compile(sampling.guide, "tool_choice" if body.forces_tool_call else "response_format")
        shape = ChatShape(new_chat_completion_id(), body.model, tools, self.renderer if body.logprobs else None)
        run = self._start([prompt], params, adapter, grammar, keep_special_tokens=tools.format is not None)
        if body.stream:
            return sse_response(chat_stream(run, shape, body.include_usage), on_close=run.close)
        result = await unless_client_leaves(request, run.collect())
        return JSONResponse(chat_body(result, shape, run.prompt_tokens))

    async def resolve_model(self, name: str) -> AdapterHandle | None:
        """None for the base model, the adapter's handle otherwise; 404 when unknown."""
        if name == self.served_name:
            return None
        return await self.registry.resolve(name)

    def _start(
        self,
        prompts: list[list[int]],
        params: list[SamplingParams],
        adapter: AdapterHandle | None,
        grammar: llguidance.LLMatcher | None,
        keep_special_tokens: bool = False,
    ) -> GenerationRun:
        # Leaving early (client gone, handler cancelled) aborts the run: see GenerationRun.events.
        deployment = self.served_name if adapter is None else adapter.name
        run = GenerationRun(self.engine, prompts, params, adapter, deployment=deployment, metrics=self.metrics,
                            grammar=grammar, keep_special_tokens=keep_special_tokens)
        run.start()
        return run

    def _tool_calling(self, body: ChatCompletionRequest) -> ToolCalling:
        if not body.offers_tools:
            return ToolCalling()
        if body.forces_tool_call:
            named = forced_tool(body.tools or [], body.tool_choice)
            return ToolCalling(forced=True, forced_name=named.function.name if named else None)
        if self.tool_format is None:
            raise BadRequestError(
                f"the model '{self.served_name}' has a chat template that shows no tool-call format this "
                "server can read, so calls cannot be found in its answers; set tool_choice to 'required' "
                "or name a function, which constrains the answer to a call",
                param="tool_choice" if body.tool_choice is not None else "tools",
            )
        return ToolCalling(format=self.tool_format)

    async def _compile(self, guide: Guide | None, param: str) -> llguidance.LLMatcher | None:
        if guide is None:
            return None
        if self.grammar is None:
            raise BadRequestError(f"{self.no_grammar_reason}; leave {param} out", param=param)
        try:
            return await asyncio.to_thread(self.grammar.compile, guide)
        except GrammarError as exc:
            raise BadRequestError(str(exc), param=param, code="invalid_schema") from None

    def _checked(self, params: SamplingParams) -> SamplingParams:
        """Refuse what this model cannot do with the request's sampling settings."""
        if params.n > self.engine.config.max_batch_size:
            raise BadRequestError(
                f"n={params.n} exceeds this engine's max_batch_size {self.engine.config.max_batch_size}",
                param="n",
            )
        vocab = self.engine.config.vocab_size
        bad = next((token for token, _ in params.logit_bias if token >= vocab), None)
        if bad is not None:
            raise BadRequestError(
                f"logit_bias names token id {bad}, but this model's vocabulary has {vocab} tokens", param="logit_bias"
            )
        return params

    def _token_bytes(self, token_id: int) -> bytes:
        if self.grammar is not None:
            return self.grammar.tokenizer.decode_bytes([token_id])
        return self.tokenizer.token_text(token_id).encode()

    def _encode_within_context(self, text: str, param: str, *, add_special_tokens: bool = True) -> list[int]:
        """The text's tokens; a text longer than the context is refused after encoding only a
        prefix of it that proves so (a 10 MB prompt costs a few KB of tokenizing)."""
        encoded = encode_bounded(
            lambda part: self.tokenizer.encode(part, add_special_tokens=add_special_tokens), text, self.max_model_len
        )
        if not encoded.complete:
            raise BadRequestError(
                f"the prompt is more than {self.max_model_len} tokens long, but this model's maximum context "
                f"length is {self.max_model_len} tokens; shorten the prompt",
                param=param,
                code="context_length_exceeded",
            )
        return encoded.ids

    def _prompt_ids(self, prompt: str | list[int]) -> list[int]:
        if isinstance(prompt, str):
            ids = self._encode_within_context(prompt, "prompt")
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
        messages = [message.for_template() for message in body.messages]
        try:
            text = self.tokenizer.render_chat(messages, tools=body.template_tools())
        except ChatTemplateError as exc:
            raise BadRequestError(str(exc), param="messages") from None
        # The template already wrote the special tokens (BOS) it wants.
        return self._encode_within_context(text, "messages", add_special_tokens=False)

    def _params_per_prompt(
        self, prompts: list[list[int]], params: SamplingParams, default_max_tokens: int, prompt_field: str
    ) -> list[SamplingParams]:
        resolved = []
        limit = self.max_model_len
        for prompt in prompts:
            room = limit - len(prompt)
            if room < 1 and params.max_tokens != 0:
                raise BadRequestError(
                    f"the prompt is {len(prompt)} tokens long, but this model's maximum context length "
                    f"is {limit} tokens, leaving no room for a completion; shorten the prompt",
                    param=prompt_field,
                    code="context_length_exceeded",
                )
            if params.max_tokens is None:
                resolved.append(params.with_max_tokens(min(default_max_tokens, room)))
            elif params.max_tokens > room or len(prompt) > limit:
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
