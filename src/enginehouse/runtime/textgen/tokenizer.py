"""The tokenizer as the replica uses it, from several threads at once.

Hugging Face fast tokenizers keep mutable state (padding/truncation settings) in Rust and raise
"Already borrowed" when two threads touch it together, so every call holds a lock. Requests
encode (prompts can be long) in worker threads while the engine thread decodes after every step,
so the two sides use two copies of the tokenizer, each with its own lock: a long prompt being
encoded never holds up the tokens of the requests already running.
"""

from __future__ import annotations

import copy
import threading
from typing import Any

from transformers import PreTrainedTokenizerBase


class ChatTemplateError(ValueError):
    pass


class SafeTokenizer:
    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self._decoder = tokenizer
        self._decode_lock = threading.Lock()
        self._encoder = copy.deepcopy(tokenizer)
        self._encode_lock = threading.Lock()
        self.vocab_size = len(tokenizer)
        self.eos_token_id: int | None = tokenizer.eos_token_id
        self.pad_token_id: int = _first_id(tokenizer.pad_token_id, tokenizer.eos_token_id, 0)
        self._token_texts: dict[int, str] = {}

    @property
    def chat_template(self) -> str:
        template = getattr(self._decoder, "chat_template", None)
        return template if isinstance(template, str) else ""

    @property
    def has_chat_template(self) -> bool:
        return bool(self.chat_template)

    def encode(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        with self._encode_lock:
            return list(self._encoder.encode(text, add_special_tokens=add_special_tokens))

    def decode(self, token_ids: list[int], *, keep_special: bool = False) -> str:
        with self._decode_lock:
            return self._decoder.decode(
                token_ids, skip_special_tokens=not keep_special, clean_up_tokenization_spaces=False
            )

    def decode_keeping_special(self, token_ids: list[int]) -> str:
        return self.decode(token_ids, keep_special=True)

    def token_text(self, token_id: int) -> str:
        """One token on its own, as log-probabilities show it (special tokens by name)."""
        text = self._token_texts.get(token_id)
        if text is None:
            # The request side's copy: the engine thread's decoder stays free.
            with self._encode_lock:
                text = self._encoder.decode([token_id], skip_special_tokens=False,
                                            clean_up_tokenization_spaces=False)
            self._token_texts[token_id] = text
        return text

    def render_chat(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> str:
        """The prompt text for a conversation, ending where the assistant's reply begins."""
        try:
            with self._encode_lock:
                rendered = self._encoder.apply_chat_template(
                    messages, tools=tools, tokenize=False, add_generation_prompt=True
                )
        except Exception as exc:  # Jinja raises its own types, templates raise anything
            raise ChatTemplateError(f"the model's chat template rejected these messages: {exc}") from None
        return str(rendered)


def _first_id(*candidates: int | None) -> int:
    for candidate in candidates:
        if candidate is not None:
            return int(candidate)
    return 0
