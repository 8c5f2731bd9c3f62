"""Tokenizing inputs of any size without stalling a replica.

``encode_bounded``: a model that takes at most N tokens only ever needs the first N tokens of an
input, and whether there are more. Tokenizing all of a 10 MB text to find out takes seconds; its
first few thousand characters answer the same in microseconds. So a long text is encoded a prefix
at a time, the prefix growing until it holds more than N tokens (then the text is over the limit)
or is the whole text.

``TokenizerThreads``: large inputs are tokenized on worker threads, each with its own copy of the
tokenizer (a fast tokenizer keeps per-call settings such as truncation in shared state and
refuses two threads at once), so neither the event loop nor any other request waits for them.
"""

from __future__ import annotations

import asyncio
import copy
import queue
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")
Tok = TypeVar("Tok")

# A generous guess of characters per token (most text has 3 to 5): a prefix of this many
# characters per token allowed is usually enough to prove a text too long in one encode.
CHARS_PER_TOKEN = 8
# Tokens next to a cut may differ from the whole text's (a word split in two); a prefix proves a
# text too long only with this many tokens to spare.
BOUNDARY_TOKENS = 8
# Prefixes shorter than this are never worth the extra encode.
MIN_WINDOW_CHARS = 4096
# A cut looks this far back for whitespace, so it does not fall inside a word.
CUT_LOOKBACK_CHARS = 256
# Inputs of at most this many characters in all are tokenized on the event loop: a few
# sentences take microseconds, less than handing them to a thread and back.
INLINE_CHARS = 20_000


@dataclass(frozen=True)
class BoundedEncoding:
    ids: list[int]  # the tokens of ``text``
    text: str  # the whole input, or a prefix of it when ``complete`` is False
    # False: the input holds more than ``max_tokens`` tokens; only ``text``, a prefix of it that
    # already holds more (``len(ids) > max_tokens``), was encoded.
    complete: bool


def window_chars(max_tokens: int) -> int:
    """Texts at most this long are encoded whole by ``encode_bounded`` (no prefix first): callers
    can skip it for them at no risk."""
    return max(MIN_WINDOW_CHARS, (max_tokens + BOUNDARY_TOKENS) * CHARS_PER_TOKEN)


def encode_bounded(encode: Callable[[str], Sequence[int]], text: str, max_tokens: int) -> BoundedEncoding:
    """``encode(text)``, or the encoding of a prefix of ``text`` that proves it longer than
    ``max_tokens`` tokens. Encodes at most about twice what can matter for a limit of
    ``max_tokens`` on ordinary text; a text of very few, very long tokens is encoded whole.

    ``encode`` maps a text to its token ids (with whatever special tokens the caller wants).
    When ``complete`` is False, the first ``max_tokens`` of ``ids`` (special tokens aside) are the
    first tokens of the whole text.
    """
    window = window_chars(max_tokens)
    while window < len(text):
        prefix = text[:_cut(text, window)]
        ids = list(encode(prefix))
        needed = max_tokens + BOUNDARY_TOKENS
        if len(ids) > needed:
            return BoundedEncoding(ids, prefix, complete=False)
        # Grow by at least double, and by as much as the tokens seen so far suggest is needed.
        estimate = int(len(prefix) * (needed + 1) / max(len(ids), 1) * 1.25)
        window = max(window * 2, estimate)
    return BoundedEncoding(list(encode(text)), text, complete=True)


def _cut(text: str, window: int) -> int:
    """Where to cut ``text`` near ``window``: at the last whitespace within the lookback, so the
    prefix ends with a whole word; at ``window`` when there is none."""
    for at in range(window, max(window - CUT_LOOKBACK_CHARS, 1), -1):
        if text[at].isspace():
            return at
    return window


class TokenizerThreads(Generic[Tok]):
    """A tokenizer for the event loop (``inline``) and ``threads`` copies of it for large inputs,
    each used by one worker thread at a time, so that no lock is held while one tokenizes."""

    def __init__(self, tokenizer: Tok, *, threads: int = 2, inline_chars: int = INLINE_CHARS) -> None:
        self.inline = tokenizer
        self.inline_chars = inline_chars
        # The copies are made here, before any request: copying reads the tokenizer's state,
        # which must not race with the event loop using it.
        self._copies: queue.SimpleQueue[Tok] = queue.SimpleQueue()
        for _ in range(threads):
            self._copies.put(copy.deepcopy(tokenizer))
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="enginehouse-tokenize")

    async def run(self, texts: Sequence[str], work: Callable[[Tok], T]) -> T:
        """``work(tokenizer)``: inline for a few sentences (microseconds), on a worker thread when
        ``texts`` are long. A worker never waits for another's copy: there is one per thread."""
        if sum(len(text) for text in texts) <= self.inline_chars:
            return work(self.inline)
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._with_copy, work)

    def _with_copy(self, work: Callable[[Tok], T]) -> T:
        tokenizer = self._copies.get()
        try:
            return work(tokenizer)
        finally:
            self._copies.put(tokenizer)
