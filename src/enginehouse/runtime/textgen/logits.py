"""What changes a sequence's logits before its next token is chosen, and the log-probabilities
reported for the token chosen.

Order, as in vLLM: log-probabilities are read from the model's own logits; then ``min_tokens``
masks the end-of-sequence tokens, ``logit_bias`` is added, and the penalties apply (OpenAI's
presence and frequency penalties over the generated tokens; transformers' repetition penalty over
prompt and generated tokens); the grammar mask comes last, then temperature, min-p, top-k, top-p.
Each sequence keeps only the state its own settings need, built when it joins the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from enginehouse.protocol.sampling import SamplingParams


@dataclass(frozen=True)
class TokenLogprob:
    """A token's log-probability and the ``top`` most likely alternatives at its position. A
    prompt's first token has neither (nothing comes before it): ``logprob`` is None."""

    token_id: int
    logprob: float | None
    top: tuple[tuple[int, float], ...] = ()


class LogitAdjuster:
    """One sequence's penalties, bias and minimum length, applied to its row of logits."""

    def __init__(self, params: SamplingParams, prompt_ids: list[int], vocab_size: int,
                 eos_token_ids: frozenset[int], device: torch.device) -> None:
        self._params = params
        self._counts: torch.Tensor | None = None
        self._seen: torch.Tensor | None = None
        if params.presence_penalty or params.frequency_penalty:
            self._counts = torch.zeros(vocab_size, dtype=torch.float32, device=device)
        if params.repetition_penalty != 1.0:
            self._seen = torch.zeros(vocab_size, dtype=torch.bool, device=device)
            prompt = torch.tensor(prompt_ids, dtype=torch.long, device=device)
            self._seen[prompt[prompt < vocab_size]] = True
        self._bias_ids = torch.tensor([token for token, _ in params.logit_bias], dtype=torch.long, device=device)
        self._bias_values = torch.tensor([bias for _, bias in params.logit_bias], dtype=torch.float32, device=device)
        self._eos_ids = torch.tensor(sorted(eos_token_ids), dtype=torch.long, device=device)

    def apply(self, row: torch.Tensor, generated: int) -> None:
        """Adjust ``row`` (one sequence's ``[vocab]`` logits, float32) in place."""
        params = self._params
        if generated < params.min_tokens and not params.ignore_eos:
            row[self._eos_ids] = float("-inf")
        if params.logit_bias:
            row.index_add_(0, self._bias_ids, self._bias_values)
        if self._seen is not None:
            penalised = row[self._seen]
            penalty = params.repetition_penalty
            row[self._seen] = torch.where(penalised > 0, penalised / penalty, penalised * penalty)
        if self._counts is not None:
            counts = self._counts
            row -= params.frequency_penalty * counts + params.presence_penalty * (counts > 0).float()

    def observe(self, token_id: int) -> None:
        """Count a generated token."""
        if self._counts is not None:
            self._counts[token_id] += 1
        if self._seen is not None:
            self._seen[token_id] = True


def token_logprobs(logprobs: torch.Tensor, token_id: int, top: int) -> TokenLogprob:
    """``logprobs`` is one position's ``[vocab]`` log-softmax."""
    alternatives: tuple[tuple[int, float], ...] = ()
    if top > 0:
        values, ids = torch.topk(logprobs, min(top, logprobs.shape[-1]))
        alternatives = tuple(zip(ids.tolist(), values.tolist()))
    return TokenLogprob(token_id, float(logprobs[token_id]), alternatives)


def prompt_logprobs(logits: torch.Tensor, prompt_ids: list[int], top: int) -> tuple[TokenLogprob, ...]:
    """Log-probabilities of a prompt's tokens from the logits of the positions before each
    (``logits`` is ``[len(prompt_ids) - 1, vocab]``)."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    first = TokenLogprob(prompt_ids[0], None)
    return (first, *(token_logprobs(logprobs[i], token, top) for i, token in enumerate(prompt_ids[1:])))
