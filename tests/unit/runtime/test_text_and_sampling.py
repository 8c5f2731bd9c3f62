"""Incremental detokenization with stop strings, and per-row sampling."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from enginehouse.protocol.sampling import SamplingParams
from enginehouse.runtime.textgen.detokenize import TextAccumulator
from enginehouse.runtime.textgen.sampling import choose_tokens, make_generator


def _stream(
    tokenizer: PreTrainedTokenizerBase, ids: list[int], stops: tuple[str, ...] = ()
) -> tuple[list[str], TextAccumulator]:
    def decode(t: list[int]) -> str:
        return tokenizer.decode(t, skip_special_tokens=True)

    acc = TextAccumulator(decode, stops)
    deltas = []
    for token in ids:
        deltas.append(acc.add(token))
        if acc.stopped:
            break
    deltas.append(acc.finish())
    return deltas, acc


def test_multibyte_characters_are_never_split(tiny_llama_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_llama_dir))
    text = "Emoji 🙂 and 日本語 text, café!"
    ids = tokenizer.encode(text, add_special_tokens=False)
    deltas, acc = _stream(tokenizer, ids)
    assert "".join(deltas) == text == acc.text
    assert all("\ufffd" not in d for d in deltas)


def test_stop_string_across_tokens_is_cut_and_never_streamed(tiny_llama_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_llama_dir))
    text = "The engine serves requests quickly. The gateway answers."
    ids = tokenizer.encode(text, add_special_tokens=False)
    deltas, acc = _stream(tokenizer, ids, stops=("quickly.", "nothing"))
    assert acc.stopped
    assert "".join(deltas) == "The engine serves requests "
    assert not any("quick" in d for d in deltas)


def test_held_back_prefix_is_released_when_it_is_not_a_stop() -> None:
    pieces = ["ab", "c", "d", "ef"]

    def decode(ids: list[int]) -> str:
        return "".join(pieces[i] for i in ids)

    acc = TextAccumulator(decode, ("cx",))
    assert acc.add(0) == "ab"
    assert acc.add(1) == ""  # "c" might start "cx"
    assert acc.add(2) == "cd"
    assert acc.add(3) == "ef"
    assert acc.finish() == ""
    earliest = TextAccumulator(decode, ("ef", "cd"))
    assert [earliest.add(i) for i in range(4)] == ["ab", "", "", ""]
    assert earliest.stopped and earliest.text == "ab"


def test_greedy_and_degenerate_filters_pick_the_argmax() -> None:
    logits = torch.randn(4, 50)
    params = [
        SamplingParams(temperature=0.0),
        SamplingParams(temperature=1.0, top_k=1),
        SamplingParams(temperature=0.7, top_p=1e-6),
        SamplingParams(temperature=0.0, seed=3),
    ]
    generators = [make_generator(p, 0, torch.device("cpu")) for p in params]
    assert choose_tokens(logits, params, generators) == logits.argmax(-1).tolist()


def test_seeded_rows_reproduce_regardless_of_neighbours() -> None:
    logits = torch.zeros(3, 100)
    seeded = SamplingParams(temperature=1.0, seed=42)

    def sample(rows: list[SamplingParams]) -> list[int]:
        generators = [make_generator(p, 0, torch.device("cpu")) for p in rows]
        return choose_tokens(logits[: len(rows)], rows, generators)

    alone = sample([seeded])[0]
    torch.manual_seed(0)
    mixed = sample([SamplingParams(temperature=1.0), seeded, SamplingParams(temperature=1.0)])[1]
    assert alone == mixed
    other_choice = make_generator(seeded, 1, torch.device("cpu"))
    assert other_choice is not None and other_choice.initial_seed() == 43


def test_top_k_keeps_only_the_k_best() -> None:
    logits = torch.arange(20, dtype=torch.float32).unsqueeze(0)
    params = [SamplingParams(temperature=2.0, top_k=3, seed=1)]
    seen = set()
    for seed in range(40):
        p = [SamplingParams(temperature=2.0, top_k=3, seed=seed)]
        seen.update(choose_tokens(logits, p, [make_generator(p[0], 0, torch.device("cpu"))]))
    assert seen <= {17, 18, 19} and len(seen) > 1
    assert params[0].top_k == 3
