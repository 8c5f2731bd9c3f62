"""Penalties, logit_bias, min_tokens, min_p and log-probabilities in the batching engine, each
checked against a reference computed here with transformers (and PEFT for an adapter), one token
at a time with no batching: the engine must choose exactly what the reference chooses."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from transformers import RepetitionPenaltyLogitsProcessor

from tests.reference_models import reference_model
from tests.unit.runtime.support import PROMPTS, Harness

Adjust = Callable[[torch.Tensor, list[int], list[int]], None]


def _reference(base_dir: Path, adapter_dir: Path | None, prompt: list[int], steps: int,
               adjust: Adjust | None = None, eos: int | None = None) -> list[int]:
    """Greedy decoding by hand: full forward each step, ``adjust`` the last logits, argmax."""
    model = reference_model(base_dir, adapter_dir)
    ids, out = list(prompt), []
    with torch.inference_mode():
        for _ in range(steps):
            logits = model(torch.tensor([ids])).logits[0, -1].float()
            if adjust is not None:
                adjust(logits, prompt, out)
            token = int(logits.argmax())
            out.append(token)
            ids.append(token)
            if token == eos:
                break
    return out


def _run(harness: Harness, prompt: str, adapter: str | None = None, **params: object) -> list[int]:
    request = harness.request(prompt, adapter=adapter, **params)
    harness.submit(request)
    harness.run(request)
    return harness.collector.tokens(request.request_id)


def _openai_penalties(presence: float, frequency: float) -> Adjust:
    def adjust(logits: torch.Tensor, _prompt: list[int], out: list[int]) -> None:
        for token in set(out):
            logits[token] -= presence + frequency * out.count(token)

    return adjust


def _repetition(penalty: float) -> Adjust:
    processor = RepetitionPenaltyLogitsProcessor(penalty)

    def adjust(logits: torch.Tensor, prompt: list[int], out: list[int]) -> None:
        logits[:] = processor(torch.tensor([prompt + out]), logits.unsqueeze(0))[0]

    return adjust


@pytest.mark.parametrize(
    ("params", "adjust"),
    [
        ({"presence_penalty": 1.5}, _openai_penalties(1.5, 0.0)),
        ({"frequency_penalty": 2.0}, _openai_penalties(0.0, 2.0)),
        ({"presence_penalty": -2.0, "frequency_penalty": 0.5}, _openai_penalties(-2.0, 0.5)),
        ({"repetition_penalty": 1.8}, _repetition(1.8)),
        ({"repetition_penalty": 0.6}, _repetition(0.6)),
    ],
)
def test_penalties_change_greedy_output_as_the_reference_does(
    make_harness: Callable[..., Harness], tiny_llama_dir: Path, params: dict[str, float], adjust: Adjust
) -> None:
    harness = make_harness()
    # Greedy output for this prompt repeats itself within a few tokens: penalties have work to do.
    prompt = harness.encode(PROMPTS[3])
    expected = _reference(tiny_llama_dir, None, prompt, 24, adjust)
    assert expected != _reference(tiny_llama_dir, None, prompt, 24), "the penalty must matter for this test"
    assert _run(harness, PROMPTS[3], max_tokens=24, ignore_eos=True, **params) == expected


def test_logit_bias_adds_to_the_logits(make_harness: Callable[..., Harness], tiny_llama_dir: Path) -> None:
    harness = make_harness()
    prompt = harness.encode(PROMPTS[1])
    plain = _reference(tiny_llama_dir, None, prompt, 10)
    bias = ((plain[0], -100.0), (plain[1], -100.0), (42, 8.5))

    def adjust(logits: torch.Tensor, _prompt: list[int], _out: list[int]) -> None:
        for token, value in bias:
            logits[token] += value

    expected = _reference(tiny_llama_dir, None, prompt, 10, adjust)
    assert expected[0] != plain[0]
    assert _run(harness, PROMPTS[1], max_tokens=10, ignore_eos=True, logit_bias=bias) == expected


def test_min_tokens_holds_back_the_end(make_harness: Callable[..., Harness], tiny_llama_dir: Path) -> None:
    harness = make_harness()
    prompt = harness.encode(PROMPTS[3])
    free = _reference(tiny_llama_dir, None, prompt, 10)
    eos = free[2]  # pretend the 3rd greedy token ends the answer
    harness.engine.config = type(harness.engine.config)(
        max_batch_size=4, max_prefill_tokens=256, eos_token_ids=frozenset({eos}),
        vocab_size=harness.engine.config.vocab_size,
    )

    def no_end_before_six(logits: torch.Tensor, _prompt: list[int], out: list[int]) -> None:
        if len(out) < 6:
            logits[eos] = float("-inf")

    expected = _reference(tiny_llama_dir, None, prompt, 10, no_end_before_six, eos=eos)
    assert len(expected) >= 6
    assert _run(harness, PROMPTS[3], max_tokens=10, min_tokens=6) == expected
    assert _run(harness, PROMPTS[3], max_tokens=10) == free[:3]


def test_min_p_keeps_only_tokens_near_the_best(make_harness: Callable[..., Harness]) -> None:
    harness = make_harness()
    greedy = _run(harness, PROMPTS[2], max_tokens=8, ignore_eos=True)
    # A min_p of 1 keeps only the most likely token: sampling becomes greedy, whatever the seed.
    for seed in range(3):
        assert _run(harness, PROMPTS[2], max_tokens=8, ignore_eos=True, temperature=1.5, seed=seed,
                    min_p=1.0) == greedy
    assert _run(harness, PROMPTS[2], max_tokens=8, ignore_eos=True, temperature=1.5, seed=0) != greedy


def _log_softmax_reference(base_dir: Path, adapter_dir: Path | None, ids: list[int]) -> torch.Tensor:
    model = reference_model(base_dir, adapter_dir)
    with torch.inference_mode():
        return torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), dim=-1)


@pytest.mark.parametrize("adapter", [None, "ft0"])
def test_logprobs_are_the_models_own_in_a_mixed_batch(
    make_harness: Callable[..., Harness], tiny_llama_dir: Path, tiny_adapter_dirs: list[Path], adapter: str | None
) -> None:
    harness = make_harness()
    harness.runner.load_adapter("ft0", str(tiny_adapter_dirs[0]))
    harness.runner.load_adapter("ft1", str(tiny_adapter_dirs[1]))
    wanted = harness.request(PROMPTS[0], adapter=adapter, max_tokens=8, ignore_eos=True, logprobs=3,
                             temperature=1.0, seed=5, presence_penalty=1.0)
    # Neighbours with other adapters and settings share every step with it.
    others = [harness.request(PROMPTS[1], adapter="ft1", max_tokens=8, logprobs=0),
              harness.request(PROMPTS[2], max_tokens=8, repetition_penalty=1.3)]
    harness.submit(wanted, *others)
    harness.run(wanted, *others)
    events = [e for e in harness.collector.of(wanted.request_id) if e.logprob is not None]
    tokens = [e.token_id for e in events]
    assert len(tokens) == 8
    prompt = harness.encode(PROMPTS[0])
    directory = tiny_adapter_dirs[0] if adapter else None
    reference = _log_softmax_reference(tiny_llama_dir, directory, prompt + tokens)
    for step, event in enumerate(events):
        expected = reference[len(prompt) - 1 + step]
        assert event.logprob is not None and event.logprob.token_id == tokens[step]
        assert event.logprob.logprob == pytest.approx(float(expected[tokens[step]]), abs=1e-4)
        top_values, top_ids = torch.topk(expected, 3)
        assert [t for t, _ in event.logprob.top] == top_ids.tolist()
        assert [v for _, v in event.logprob.top] == pytest.approx(top_values.tolist(), abs=1e-4)
    zero = [e.logprob for e in harness.collector.of(others[0].request_id) if e.logprob is not None]
    assert zero and all(lp.top == () for lp in zero)
    assert all(e.logprob is None for e in harness.collector.of(others[1].request_id))


def test_prompt_logprobs_with_nothing_generated(
    make_harness: Callable[..., Harness], tiny_llama_dir: Path
) -> None:
    harness = make_harness()
    echo = harness.request(PROMPTS[1], max_tokens=0, logprobs=2, prompt_logprobs=2)
    neighbour = harness.request(PROMPTS[0], max_tokens=5)
    harness.submit(neighbour, echo)
    harness.run(echo, neighbour)
    [event] = harness.collector.of(echo.request_id)
    assert event.finish_reason == "length" and event.completion_tokens == 0 and event.token_id is None
    prompt = harness.encode(PROMPTS[1])
    reference = _log_softmax_reference(tiny_llama_dir, None, prompt)
    assert event.prompt_logprobs is not None and len(event.prompt_logprobs) == len(prompt)
    first, *rest = event.prompt_logprobs
    assert first.token_id == prompt[0] and first.logprob is None
    for position, entry in enumerate(rest):
        assert entry.token_id == prompt[position + 1]
        assert entry.logprob == pytest.approx(float(reference[position, prompt[position + 1]]), abs=1e-4)
        assert [t for t, _ in entry.top] == torch.topk(reference[position], 2).indices.tolist()
    assert len(harness.collector.tokens(neighbour.request_id)) == 5
