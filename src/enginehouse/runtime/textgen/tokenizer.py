"""The tokenizer as the replica uses it, from several threads at once.

Hugging Face fast tokenizers keep mutable state (padding/truncation settings) in Rust and raise
"Already borrowed" when two threads touch it together; the HTTP handlers encode while the engine
thread decodes, so every call goes through one lock. Calls are short, so the lock is cheap.
"""

from __future__ import annotations

import threading
from typing import Any

from transformers import PreTrainedTokenizerBase


class ChatTemplateError(ValueError):
    pass


class SafeTokenizer:
    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self._tokenizer = tokenizer
        self._lock = threading.Lock()
        self.vocab_size = len(tokenizer)
        self.eos_token_id: int | None = tokenizer.eos_token_id
        self.pad_token_id: int = _first_id(tokenizer.pad_token_id, tokenizer.eos_token_id, 0)

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self._tokenizer, "chat_template", None))

    def encode(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        with self._lock:
            return list(self._tokenizer.encode(text, add_special_tokens=add_special_tokens))

    def decode(self, token_ids: list[int]) -> str:
        with self._lock:
            return self._tokenizer.decode(
                token_ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
            )

    def render_chat(self, messages: list[dict[str, Any]]) -> str:
        """The prompt text for a conversation, ending where the assistant's reply begins."""
        try:
            with self._lock:
                rendered = self._tokenizer.apply_chat_template(
                    messages, tokenize=False, add_generation_prompt=True
                )
        except Exception as exc:  # Jinja raises its own types, templates raise anything
            raise ChatTemplateError(f"the model's chat template rejected these messages: {exc}") from None
        return str(rendered)


def _first_id(*candidates: int | None) -> int:
    for candidate in candidates:
        if candidate is not None:
            return int(candidate)
    return 0
