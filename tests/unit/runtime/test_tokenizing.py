"""Tokenizing without stalling a replica: ``encode_bounded`` reads only what can matter for a limit
and gives the same first tokens as encoding everything; ``TokenizerThreads`` keeps large inputs
off the event loop, each worker with a copy of its own, so none waits for another; and the
encoder endpoints' length rule refuses or truncates a 10 MB input after reading a prefix of it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from enginehouse.demo.tiny_encoders import build_tiny_bert_tokenizer
from enginehouse.errors import BadRequestError
from enginehouse.runtime.single.inputs import encode_texts
from enginehouse.runtime.tokenizing import TokenizerThreads, encode_bounded, window_chars

HUGE = ("the quick brown fox jumps over the lazy dog. " * 230_000)[:10_000_000]


@pytest.fixture(scope="module")
def wordpiece(tmp_path_factory: pytest.TempPathFactory) -> PreTrainedTokenizerBase:
    return build_tiny_bert_tokenizer(tmp_path_factory.mktemp("wordpiece"))


@pytest.fixture(scope="module")
def bpe(tiny_llama_dir: Path) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(str(tiny_llama_dir))


def counting(tokenizer: PreTrainedTokenizerBase) -> tuple[Callable[[str], list[int]], list[int]]:
    """An ``encode`` for ``tokenizer`` and the list of how many characters each call read."""
    read: list[int] = []

    def encode(text: str) -> list[int]:
        read.append(len(text))
        return list(tokenizer(text, verbose=False)["input_ids"])

    return encode, read


@pytest.mark.parametrize("name", ["wordpiece", "bpe"])
def test_a_huge_text_is_proved_too_long_from_a_prefix(name: str, request: pytest.FixtureRequest) -> None:
    tokenizer: PreTrainedTokenizerBase = request.getfixturevalue(name)
    encode, read = counting(tokenizer)
    bounded = encode_bounded(encode, HUGE, 256)
    assert not bounded.complete and len(bounded.ids) > 256
    assert sum(read) <= 4 * window_chars(256)  # not 10 MB
    assert HUGE.startswith(bounded.text)
    # The first tokens are those of the whole text (here: of a prefix far longer than needed).
    whole = tokenizer(HUGE[:50_000], verbose=False)["input_ids"]
    assert bounded.ids[:255] == whole[:255]


@pytest.mark.parametrize("name", ["wordpiece", "bpe"])
def test_a_text_within_the_limit_is_encoded_whole(name: str, request: pytest.FixtureRequest) -> None:
    tokenizer: PreTrainedTokenizerBase = request.getfixturevalue(name)
    encode, _ = counting(tokenizer)
    text = HUGE[:30_000]  # long in characters, yet within a limit of 100 000 tokens
    bounded = encode_bounded(encode, text, 100_000)
    assert bounded.complete and bounded.text == text
    assert bounded.ids == tokenizer(text, verbose=False)["input_ids"]
    short = encode_bounded(encode, "hello world", 8)
    assert short.complete and short.ids == tokenizer("hello world")["input_ids"]


def test_long_tokens_grow_the_prefix_until_it_proves_enough(wordpiece: PreTrainedTokenizerBase) -> None:
    # Words past WordPiece's 100 characters are one [UNK] each: few tokens per character.
    text = " ".join(["x" * 150] * 5_000)
    encode, read = counting(wordpiece)
    bounded = encode_bounded(encode, text, 300)
    assert not bounded.complete and len(bounded.ids) > 300
    assert len(read) > 1 and sum(read) < len(text)
    assert bounded.ids[:299] == wordpiece(text[:100_000], verbose=False)["input_ids"][:299]


def test_a_text_without_whitespace_is_cut_anyway(bpe: PreTrainedTokenizerBase) -> None:
    text = "abcdefgh" * 1_000_000
    encode, read = counting(bpe)
    bounded = encode_bounded(encode, text, 128)
    assert not bounded.complete and sum(read) < 100_000


def test_encoder_inputs_refuse_or_truncate_a_huge_text_from_a_prefix(wordpiece: PreTrainedTokenizerBase) -> None:
    with pytest.raises(BadRequestError) as refused:
        encode_texts(wordpiece, ["short", HUGE], max_length=128, truncate=False)
    assert refused.value.code == "context_length_exceeded"
    assert "input[1] is at least" in refused.value.message and "at most 128 tokens" in refused.value.message
    rows = encode_texts(wordpiece, ["short", HUGE], max_length=128, truncate=True).rows
    expected = wordpiece(HUGE[:20_000], truncation=True, max_length=128)["input_ids"]
    assert rows[1] == expected and len(rows[1]) == 128
    offsets = encode_texts(wordpiece, [HUGE], max_length=128, truncate=True, with_offsets=True)
    assert offsets.offsets is not None and offsets.offsets[0][1] == (0, 3)  # "the", in the original text


def test_small_inputs_stay_inline_and_large_ones_go_to_a_worker(wordpiece: PreTrainedTokenizerBase) -> None:
    threads = TokenizerThreads(wordpiece, threads=1, inline_chars=100)
    loop_thread = threading.current_thread()

    def where(tokenizer: PreTrainedTokenizerBase) -> tuple[threading.Thread, bool]:
        return threading.current_thread(), tokenizer is wordpiece

    async def both() -> list[tuple[threading.Thread, bool]]:
        return [await threads.run(["a short one"], where), await threads.run(["x" * 101], where)]

    (small_thread, small_inline), (large_thread, large_inline) = asyncio.run(both())
    assert small_thread is loop_thread and small_inline
    assert large_thread is not loop_thread and not large_inline  # a copy of its own


def test_a_long_tokenization_holds_up_no_other(wordpiece: PreTrainedTokenizerBase) -> None:
    threads = TokenizerThreads(wordpiece, threads=2, inline_chars=0)
    second_ran = threading.Event()

    def slow(tokenizer: PreTrainedTokenizerBase) -> bool:
        # Finishes only once the other one has run: with a shared lock it never would.
        return second_ran.wait(timeout=60)

    def quick(tokenizer: PreTrainedTokenizerBase) -> bool:
        tokenizer("hello")
        second_ran.set()
        return True

    async def both() -> list[bool]:
        first = asyncio.ensure_future(threads.run(["x"], slow))
        await asyncio.sleep(0)  # the slow one starts first
        return [await threads.run(["y"], quick), await first]

    assert asyncio.run(both()) == [True, True]
