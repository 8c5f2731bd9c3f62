"""Sampling settings at the edges of what the request models accept: each still picks a token
(never a NaN probability or an error), and picks the one a person would expect."""

from __future__ import annotations

import pytest
import torch

from enginehouse.protocol.sampling import SamplingParams
from enginehouse.runtime.textgen.sampling import choose_tokens, finite_scores

LOGITS = torch.tensor([[0.5, 3.0, -1.0, 2.0]])
BEST = 1


def _choose(logits: torch.Tensor, params: SamplingParams, seed: int = 0) -> int:
    generator = torch.Generator().manual_seed(seed)
    return choose_tokens(logits, [params], [generator])[0]


@pytest.mark.parametrize("temperature", [1e-30, 5e-324, 1e-6])
def test_a_tiny_temperature_is_greedy(temperature: float) -> None:
    params = SamplingParams(temperature=temperature)
    assert params.greedy
    assert _choose(LOGITS * 1e4, params) == BEST


def test_a_top_p_too_small_for_any_token_keeps_the_likeliest() -> None:
    params = SamplingParams(temperature=1.0, top_p=1e-300)
    assert {_choose(LOGITS, params, seed) for seed in range(20)} == {BEST}


def test_infinite_scores_share_the_choice_and_nan_is_never_chosen() -> None:
    logits = torch.tensor([[float("nan"), float("inf"), 1.0, float("inf")]])
    params = SamplingParams(temperature=0.7)
    assert {_choose(logits, params, seed) for seed in range(40)} == {1, 3}


def test_scores_with_no_finite_value_fall_back_to_the_argmax() -> None:
    assert finite_scores(torch.tensor([float("nan"), float("-inf")])) is None
    logits = torch.tensor([[float("nan"), float("nan")]])
    assert _choose(logits, SamplingParams(temperature=1.0)) in (0, 1)


def test_finite_scores_pass_through_unchanged() -> None:
    scores = torch.tensor([1.0, -2.0, float("-inf")])
    assert finite_scores(scores) is scores
