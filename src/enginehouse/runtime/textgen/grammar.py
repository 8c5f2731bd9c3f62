"""Constrained decoding with llguidance: a request's ``Guide`` (a JSON schema) becomes a matcher
that says, before every step, which tokens keep the answer valid.

llguidance rather than another grammar engine: it runs on the CPU in Rust, builds a token mask
in tens of microseconds without a per-schema warm-up (no ahead-of-time automaton over the whole
vocabulary), covers JSON Schema widely (and refuses what it does not cover, which is what lets us
answer 400 instead of producing an unchecked answer), and works from any Hugging Face fast
tokenizer. Compiling a grammar can take a while for a large schema, so it happens in the request
handler's worker thread; the engine thread only computes masks and consumes tokens.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import llguidance
import llguidance.hf
import torch
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from enginehouse.protocol.sampling import Guide

log = logging.getLogger(__name__)

# JSON is written compactly, with at most one space between tokens: free whitespace lets a weak
# model spend its whole token budget on blanks and never finish the object.
_JSON_OPTIONS: llguidance.JsonCompileOptions = {"whitespace_pattern": r"\x20?"}
_BITS = torch.arange(32, dtype=torch.int32)


class GrammarError(ValueError):
    """The guide cannot be enforced (an invalid or unsupported schema); the message says why."""


class GrammarEngine:
    """Compiles guides for one tokenizer and masks logits for many matchers at once."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, vocab_size: int, eos_token_ids: Sequence[int]) -> None:
        if not isinstance(tokenizer, PreTrainedTokenizerFast):
            raise GrammarError("structured output needs a fast (Rust) tokenizer, which this model lacks")
        self.vocab_size = vocab_size
        self._tokenizer = llguidance.hf.from_tokenizer(
            tokenizer, n_vocab=vocab_size, eos_token=sorted(eos_token_ids) or None
        )
        self._executor = llguidance.LLExecutor()

    @property
    def tokenizer(self) -> llguidance.LLTokenizer:
        return self._tokenizer

    def compile(self, guide: Guide) -> llguidance.LLMatcher:
        """A fresh matcher for ``guide``; raises ``GrammarError`` for a guide it cannot enforce."""
        try:
            grammar = llguidance.LLMatcher.grammar_from_json_schema(guide.spec, overrides=_JSON_OPTIONS)
        except ValueError as exc:
            raise GrammarError(f"the JSON schema is not valid: {exc}") from None
        problem = llguidance.LLMatcher.validate_grammar(grammar, self._tokenizer)
        if problem:
            raise GrammarError(f"the JSON schema cannot be enforced: {problem}")
        matcher = llguidance.LLMatcher(self._tokenizer, grammar, log_level=0)
        if matcher.is_error():
            raise GrammarError(f"the JSON schema cannot be enforced: {matcher.get_error()}")
        return matcher

    def allowed(self, matchers: Sequence[llguidance.LLMatcher]) -> torch.Tensor:
        """``[len(matchers), vocab]`` booleans: the tokens each matcher accepts next."""
        words = (self.vocab_size + 31) // 32
        bitmask = torch.full((len(matchers), words), -1, dtype=torch.int32)
        self._executor.unsafe_compute_mask_ptr(
            [(matcher, row) for row, matcher in enumerate(matchers)], bitmask.data_ptr(), words * 4, len(matchers)
        )
        bits = (bitmask.unsqueeze(-1) >> _BITS) & 1
        return bits.reshape(len(matchers), -1)[:, : self.vocab_size].bool()


def try_grammar_engine(
    tokenizer: PreTrainedTokenizerBase, vocab_size: int, eos_token_ids: Sequence[int]
) -> tuple[GrammarEngine | None, str | None]:
    """The engine, or None and why structured output is unavailable for this model."""
    try:
        return GrammarEngine(tokenizer, vocab_size, eos_token_ids), None
    except Exception as exc:  # a tokenizer llguidance cannot read: serve everything else
        log.warning("structured output is unavailable for this model: %s", exc)
        return None, str(exc)
