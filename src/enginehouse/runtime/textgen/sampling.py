"""Choose the next token of each batch row from its logits, under that row's own settings."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from enginehouse.protocol.sampling import SamplingParams


def make_generator(params: SamplingParams, choice: int, device: torch.device) -> torch.Generator | None:
    """A private RNG for a seeded request, so its samples do not depend on its neighbours.

    Choice ``i`` of a request with ``n`` choices uses ``seed + i``: reproducible, yet the
    choices differ from one another.
    """
    if params.seed is None or params.greedy:
        return None
    generator = torch.Generator(device=device)
    generator.manual_seed((params.seed + choice) % 2**64)
    return generator


def choose_tokens(
    logits: torch.Tensor,
    params: Sequence[SamplingParams],
    generators: Sequence[torch.Generator | None],
) -> list[int]:
    """``logits`` is ``[rows, vocab]`` (float32); one token id per row."""
    chosen = logits.argmax(dim=-1).tolist()
    for row, (row_params, generator) in enumerate(zip(params, generators)):
        if not row_params.greedy:
            chosen[row] = _sample_row(logits[row], row_params, generator)
    return chosen


def _sample_row(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> int:
    scores = finite_scores(logits / params.temperature)
    if scores is None:
        return int(logits.argmax().item())
    if params.min_p > 0.0:
        scores = _min_p_filter(scores, params.min_p)
    if 0 < params.top_k < scores.shape[-1]:
        kth = torch.topk(scores, params.top_k).values[-1]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if params.top_p < 1.0:
        scores = _top_p_filter(scores, params.top_p)
    probs = torch.softmax(scores, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator).item())


def finite_scores(scores: torch.Tensor) -> torch.Tensor | None:
    """``scores`` that softmax can take, or None when no token has a score at all.

    Penalties and bias (a tiny repetition_penalty divides by almost nothing) can push scores to
    infinity, and infinity minus infinity inside softmax is NaN, which sampling refuses. Tokens
    at +inf are infinitely likelier than the rest, so they share the choice evenly; NaN is never
    chosen.
    """
    if bool(torch.isfinite(scores).all()):
        return scores  # the usual case, at the cost of one check
    if bool(torch.isposinf(scores).any()):
        return torch.where(torch.isposinf(scores), 0.0, float("-inf"))
    if bool(torch.isnan(scores).any()):
        scores = scores.masked_fill(torch.isnan(scores), float("-inf"))
    return None if bool(torch.isneginf(scores).all()) else scores


def _min_p_filter(scores: torch.Tensor, min_p: float) -> torch.Tensor:
    # Keep the tokens at least min_p times as likely as the most likely one (which always stays).
    probs = torch.softmax(scores, dim=-1)
    return scores.masked_fill(probs < min_p * probs.max(), float("-inf"))


def _top_p_filter(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    # Keep the smallest set of most likely tokens whose probability reaches top_p; the most
    # likely token always stays, so the set is never empty.
    sorted_scores, order = torch.sort(scores, descending=True)
    probs = torch.softmax(sorted_scores, dim=-1)
    mass_before = torch.cumsum(probs, dim=-1) - probs
    drop_sorted = mass_before >= top_p
    # A top_p below float32's smallest number rounds to 0, which would drop every token.
    drop_sorted[0] = False
    drop = torch.zeros_like(drop_sorted).scatter(0, order, drop_sorted)
    return scores.masked_fill(drop, float("-inf"))
