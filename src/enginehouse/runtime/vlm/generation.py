"""A LLaVA-style model for ``vlm-generation``: loading, turning chat messages with images into
model inputs, and a token-by-token greedy/sampled decode loop.

Requests run one at a time (``VlmRunner`` owns a single worker thread): images make prompts
long and of different shapes, and on the CPU replicas this targets, a second concurrent
generation would only halve the speed of the first. The loop is a plain KV-cached forward per
token, so greedy output equals ``model.generate`` on the same inputs, and each token can be
streamed as soon as it is chosen.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from torch import nn
from transformers import AutoModelForImageTextToText, AutoProcessor

from enginehouse.errors import BadRequestError
from enginehouse.protocol.openai import ChatCompletionRequest, ImagePart, TextPart
from enginehouse.protocol.sampling import SamplingParams
from enginehouse.runtime.options import RuntimeOptions
from enginehouse.runtime.single import loading
from enginehouse.runtime.single.loading import ModelLoadError
from enginehouse.runtime.textgen.logits import LogitAdjuster
from enginehouse.runtime.textgen.sampling import choose_tokens, make_generator
from enginehouse.runtime.tokenizing import encode_bounded, window_chars
from enginehouse.runtime.vlm.images import decode_rgb

log = logging.getLogger(__name__)

DEFAULT_MAX_TOKENS = 256


@dataclass
class VlmGenerator:
    model: nn.Module
    processor: Any  # a transformers ProcessorMixin (image processor + tokenizer)
    device: torch.device
    max_length: int
    eos_ids: frozenset[int]
    model_type: str

    @property
    def tokenizer(self) -> Any:
        return self.processor.tokenizer

    def prepare(self, body: ChatCompletionRequest) -> dict[str, torch.Tensor]:
        """The processor's tensors for the request's messages (decodes images; 400 on bad ones)."""
        messages: list[dict[str, Any]] = []
        images: list[Image.Image] = []
        for i, message in enumerate(body.messages):
            if message.content is None or isinstance(message.content, str):
                messages.append({"role": message.role, "content": message.content or ""})
                continue
            parts: list[dict[str, str]] = []
            for part in message.content:
                if isinstance(part, ImagePart):
                    images.append(decode_rgb(part.image_url.url, param=f"messages[{i}].content"))
                    parts.append({"type": "image"})
                elif isinstance(part, TextPart):
                    parts.append({"type": "text", "text": part.text})
            messages.append({"role": message.role, "content": parts})
        if not self.tokenizer.chat_template:
            raise BadRequestError("this model has no chat template, so it cannot take chat messages",
                                  param="messages", code="no_chat_template")
        try:
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception as exc:
            raise BadRequestError(f"the chat template refused these messages: {exc}", param="messages") from None
        self._check_length(text)
        try:
            # The template already wrote the special tokens (BOS) it wants.
            inputs = self.processor(images=images or None, text=text, return_tensors="pt", add_special_tokens=False)
        except Exception as exc:
            raise BadRequestError(f"the model's processor refused the input: {loading.short(exc)}",
                                  param="messages") from None
        return {k: v.to(self.device) for k, v in inputs.items()}

    def _check_length(self, text: str) -> None:
        """A 400 for a prompt whose text alone is over the context, found from a prefix of it:
        the processor would otherwise tokenize all of it (seconds for megabytes) to say the same."""
        if len(text) <= window_chars(self.max_length):
            return
        bounded = encode_bounded(lambda t: self.tokenizer(t, add_special_tokens=False)["input_ids"], text,
                                 self.max_length)
        if not bounded.complete:
            raise BadRequestError(
                f"the prompt is at least {len(bounded.ids)} tokens long (its first {len(bounded.text)} characters "
                f"alone), but this model's maximum context length is {self.max_length} tokens; shorten it",
                param="messages", code="context_length_exceeded")

    def resolve_max_tokens(self, params: SamplingParams, prompt_tokens: int) -> int:
        room = self.max_length - prompt_tokens
        if room < 1:
            raise BadRequestError(
                f"the prompt is {prompt_tokens} tokens long (images included), but this model's maximum "
                f"context length is {self.max_length} tokens; shorten it or send fewer images",
                param="messages", code="context_length_exceeded")
        if params.max_tokens is None:
            return min(DEFAULT_MAX_TOKENS, room)
        if params.max_tokens > room:
            raise BadRequestError(
                f"this model's maximum context length is {self.max_length} tokens, but "
                f"{prompt_tokens + params.max_tokens} were requested ({prompt_tokens} in the prompt, images "
                f"included, {params.max_tokens} for the completion); reduce the prompt or max_tokens",
                param="max_tokens", code="context_length_exceeded")
        return params.max_tokens

    def decode(self, ids: list[int]) -> str:
        return str(self.tokenizer.decode(ids, skip_special_tokens=True))

    @torch.inference_mode()
    def generate(self, inputs: dict[str, torch.Tensor], params: SamplingParams, max_tokens: int,
                 on_token: Callable[[int], bool]) -> str:
        """Choose up to ``max_tokens`` tokens, handing each to ``on_token`` (which returns False
        to stop: a stop string or a client that left). Returns the finish reason."""
        generator = make_generator(params, 0, self.device)
        attention = inputs["attention_mask"]
        out = self.model(**inputs, use_cache=True)
        adjuster = None
        if params.adjusts_logits:
            prompt = inputs["input_ids"][0].tolist()
            adjuster = LogitAdjuster(params, prompt, int(out.logits.shape[-1]), self.eos_ids, self.device)
        for produced in range(max_tokens):
            logits = out.logits[:, -1, :].float()
            if adjuster is not None:
                adjuster.apply(logits[0], produced)
            token = choose_tokens(logits, [params], [generator])[0]
            if adjuster is not None:
                adjuster.observe(token)
            if not params.ignore_eos and token in self.eos_ids:
                return "stop"
            if not on_token(token):
                return "stop"
            if produced + 1 == max_tokens:
                break
            attention = torch.cat([attention, attention.new_ones((1, 1))], dim=1)
            # transformers 5 renamed past_key_values to cache; older model classes keep the old name.
            cache = {"cache": out.cache} if hasattr(out, "cache") else {"past_key_values": out.past_key_values}
            out = self.model(input_ids=torch.tensor([[token]], device=self.device), attention_mask=attention,
                             use_cache=True, **cache)
        return "length"

    def describe(self) -> dict[str, Any]:
        return {"max_model_len": self.max_length}


def open_vlm_generator(source: str, options: RuntimeOptions, *, base_model_type: str | None = None) -> VlmGenerator:
    """Load ``source`` as an image-text-to-text model with its processor. Raises ``ModelLoadError``."""
    loading.check_source(source, fine_tune=base_model_type is not None, task="vlm-generation")
    config = loading.load_config(source)
    loading.check_model_type(config, base_model_type, source)
    if getattr(config, "vision_config", None) is None:
        raise ModelLoadError(f"{source} is not a vision-language model (its config has no vision_config); a "
                             "vlm-generation engine needs a model such as LLaVA saved with its processor")
    try:
        processor = AutoProcessor.from_pretrained(source)
    except Exception as exc:
        raise ModelLoadError(f"could not load the processor of {source}: {loading.short(exc)}") from None
    if getattr(processor, "tokenizer", None) is None or getattr(processor, "image_processor", None) is None:
        raise ModelLoadError(f"{source} has no image processor and tokenizer saved with it (save the "
                             "model's AutoProcessor next to its weights)")
    model, device = loading.load_weights(AutoModelForImageTextToText, source, options.dtype, task="vlm-generation")
    text_config = config.get_text_config()
    limit = min(int(getattr(text_config, "max_position_embeddings", 0) or loading.DEFAULT_MAX_LENGTH),
                loading.DEFAULT_MAX_LENGTH)
    if options.max_model_len is not None and options.max_model_len > limit:
        raise ModelLoadError(f"max_model_len {options.max_model_len} exceeds the model's context length {limit}; "
                             f"set runtime_options.max_model_len to at most {limit}")
    eos = getattr(model.generation_config, "eos_token_id", None)
    if eos is None:
        eos = processor.tokenizer.eos_token_id
    eos_ids = frozenset([eos] if isinstance(eos, int) else list(eos or []))
    log.info("loaded vlm-generation model %s on %s", source, device)
    return VlmGenerator(model, processor, device, options.max_model_len or limit, eos_ids, str(config.model_type))
