"""Each token's text is read from a short window, not from the whole completion: the streamed
text must still be exactly what decoding the whole completion gives, for byte-level BPE (half
characters), SentencePiece-style Metaspace (a leading space that depends on the token before) and
WordPiece (``##`` pieces, and a decoder that tidies spaces), and a window must stay short however
long the answer grows."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from enginehouse.demo.tiny_encoders import build_tiny_bert_tokenizer
from enginehouse.demo.tiny_models import _corpus
from enginehouse.runtime.textgen.detokenize import TextAccumulator

Decode = Callable[[list[int]], str]


def _metaspace_tokenizer() -> PreTrainedTokenizerFast:
    """A SentencePiece-style tokenizer: words start with '▁', which the decoder turns into a
    space except at the very start."""
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first")
    tokenizer.decoder = decoders.Metaspace(prepend_scheme="first")
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False)
    tokenizer.train_from_iterator(_corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


@pytest.fixture(scope="module")
def decoders_by_kind(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Decode]:
    kinds = {
        "byte-level": AutoTokenizer.from_pretrained(str(tiny_llama_dir)),
        "metaspace": _metaspace_tokenizer(),
        "wordpiece": build_tiny_bert_tokenizer(tmp_path_factory.mktemp("bert-tok")),
    }
    return {kind: _decoder(tokenizer) for kind, tokenizer in kinds.items()}


def _decoder(tokenizer: PreTrainedTokenizerFast) -> Decode:
    def decode(ids: list[int]) -> str:  # as the replica decodes (runtime/textgen/tokenizer.py)
        return tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    decode.vocab_size = len(tokenizer)  # type: ignore[attr-defined]
    return decode


def _streamed(decode: Decode, ids: list[int]) -> str:
    text = TextAccumulator(decode)
    return "".join(text.add(token) for token in ids) + text.finish()


@pytest.mark.parametrize("kind", ["byte-level", "metaspace", "wordpiece"])
def test_the_stream_is_the_whole_decode(decoders_by_kind: dict[str, Decode], kind: str) -> None:
    decode = decoders_by_kind[kind]
    rng = random.Random(kind)
    vocab = decode.vocab_size  # type: ignore[attr-defined]
    # Random token sequences: half characters, special tokens, pieces in any order.
    for _ in range(200):
        ids = [rng.randrange(vocab) for _ in range(rng.randrange(1, 40))]
        assert _streamed(decode, ids) == decode(ids), ids


def test_a_window_stays_short_however_long_the_answer(decoders_by_kind: dict[str, Decode]) -> None:
    decode = decoders_by_kind["metaspace"]
    longest = 0

    def recording(ids: list[int]) -> str:
        nonlocal longest
        longest = max(longest, len(ids))
        return decode(ids)

    ids = [7 + i % 300 for i in range(2000)]
    assert _streamed(recording, ids) == decode(ids)
    assert longest <= 8  # not the 2,000 tokens a whole decode reads at the end


def test_a_decoder_that_rewrites_its_context_is_read_whole() -> None:
    # "!" shouts the text before it: appending a token changes what came before, which no window
    # can stream exactly; the accumulator then reads the whole completion each time, as it used to.
    pieces = ["well", " ok", "!", " then", " fine"]
    calls: list[list[int]] = []

    def decode(ids: list[int]) -> str:
        calls.append(list(ids))
        text = ""
        for i in ids:
            text = text.upper() + pieces[i] if pieces[i] == "!" else text + pieces[i]
        return text

    text = TextAccumulator(decode)
    assert text.add(0) == "well" and text.add(1) == " ok"
    text.add(2)
    calls.clear()
    text.add(3)
    text.add(4)
    assert calls == [[0, 1, 2, 3], [0, 1, 2, 3, 4]]  # whole, from the rewrite on
    assert text.finish() == ""
