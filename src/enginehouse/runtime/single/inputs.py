"""Turning a request's texts into token rows, with the length rule of encoder endpoints (embedding,
NER, classification): an input longer than the model's maximum is a 400 unless the request sets
``truncate: true``, which cuts it to the maximum (keeping the model's special tokens, e.g. BERT's
final [SEP]). A long text is never tokenized whole to find that out (``encode_bounded``)."""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from enginehouse.errors import BadRequestError
from enginehouse.runtime.tokenizing import encode_bounded, window_chars


@dataclass(frozen=True)
class EncodedTexts:
    rows: list[list[int]]
    # Per token, the (start, end) characters of the text it came from, the index of its word
    # (None for special tokens) and whether it is a special token; filled when asked for.
    offsets: list[list[tuple[int, int]]] | None = None
    word_ids: list[list[int | None]] | None = None
    special: list[list[int]] | None = None

    @property
    def token_count(self) -> int:
        return sum(len(row) for row in self.rows)


def encode_texts(
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    *,
    max_length: int,
    truncate: bool,
    with_offsets: bool = False,
) -> EncodedTexts:
    """Raises ``BadRequestError`` for an input over ``max_length`` without ``truncate``, or one
    that yields no tokens at all."""
    texts = _bounded(tokenizer, texts, max_length=max_length, truncate=truncate)
    options = {"return_offsets_mapping": True, "return_special_tokens_mask": True} if with_offsets else {}
    # verbose=False: the length check below says it better than the tokenizer's warning.
    encoding = tokenizer(texts, add_special_tokens=True, truncation=False, verbose=False, **options)
    too_long = [i for i, ids in enumerate(encoding["input_ids"]) if len(ids) > max_length]
    if too_long and not truncate:
        i = too_long[0]
        raise _too_long(texts, i, f"{len(encoding['input_ids'][i])} tokens long", max_length)
    if too_long:
        # Re-encode with the tokenizer's own truncation, which keeps the closing special tokens.
        encoding = tokenizer(texts, add_special_tokens=True, truncation=True, max_length=max_length, **options)
    rows = [list(ids) for ids in encoding["input_ids"]]
    empty = next((i for i, row in enumerate(rows) if not row), None)
    if empty is not None:
        raise BadRequestError(f"input[{empty}] yields no tokens", param="input")
    if not with_offsets:
        return EncodedTexts(rows)
    return EncodedTexts(
        rows,
        offsets=[[(int(a), int(b)) for a, b in row] for row in encoding["offset_mapping"]],
        word_ids=[encoding.word_ids(i) for i in range(len(rows))],
        special=[list(mask) for mask in encoding["special_tokens_mask"]],
    )


def _bounded(
    tokenizer: PreTrainedTokenizerBase, texts: list[str], *, max_length: int, truncate: bool
) -> list[str]:
    """``texts`` with every long one that is over ``max_length`` tokens cut to a prefix that still
    is (``truncate``: the tokenizer then cuts it to the maximum), or a 400 for it."""
    limit = window_chars(max_length)
    if all(len(text) <= limit for text in texts):
        return texts

    def encode(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=True, truncation=False, verbose=False)["input_ids"])

    bounded = list(texts)
    for i, text in enumerate(texts):
        if len(text) <= limit:
            continue
        encoded = encode_bounded(encode, text, max_length)
        if encoded.complete:
            continue
        if not truncate:
            how_long = f"at least {len(encoded.ids)} tokens long (its first {len(encoded.text)} characters alone)"
            raise _too_long(texts, i, how_long, max_length)
        bounded[i] = encoded.text
    return bounded


def _too_long(texts: list[str], index: int, how_long: str, max_length: int) -> BadRequestError:
    where = "input" if len(texts) == 1 else f"input[{index}]"
    return BadRequestError(
        f"{where} is {how_long}, but this model takes at most {max_length} tokens; shorten it, or send "
        f"\"truncate\": true to cut it to the first {max_length} tokens",
        param="input",
        code="context_length_exceeded",
    )


def check_token_rows(rows: list[list[int]], *, vocab_size: int, max_length: int, truncate: bool) -> list[list[int]]:
    """Token-id inputs are taken as given (no special tokens added): in range, and cut to
    ``max_length`` only when ``truncate`` asks for it."""
    for i, row in enumerate(rows):
        bad = next((t for t in row if t >= vocab_size), None)
        if bad is not None:
            raise BadRequestError(
                f"token id {bad} in input[{i}] is out of range for this model (vocabulary size {vocab_size})",
                param="input",
            )
        if len(row) > max_length and not truncate:
            raise BadRequestError(
                f"input[{i}] is {len(row)} tokens long, over this model's maximum of {max_length} tokens; "
                f"shorten it, or send \"truncate\": true to cut it to the first {max_length} tokens",
                param="input",
                code="context_length_exceeded",
            )
    return [row[:max_length] for row in rows]
