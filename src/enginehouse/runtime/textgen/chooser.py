"""One step's logits → each running sequence's next token, with its log-probabilities.

Most rows ask for nothing beyond temperature and top-k/top-p, and take the plain path; the work
for penalties, grammars and log-probabilities is done only for the rows that asked for it.
"""

from __future__ import annotations

import torch

from enginehouse.runtime.textgen.grammar import GrammarEngine
from enginehouse.runtime.textgen.logits import TokenLogprob, token_logprobs
from enginehouse.runtime.textgen.sampling import choose_tokens
from enginehouse.runtime.textgen.sequence import Sequence


class TokenChooser:
    def __init__(self, grammar: GrammarEngine | None) -> None:
        self.grammar = grammar

    def choose(self, sequences: list[Sequence], logits: torch.Tensor) -> tuple[list[int], list[TokenLogprob | None]]:
        """``logits`` is ``[rows, vocab]`` float32, one row per sequence; it is changed in place."""
        wanting = [row for row, seq in enumerate(sequences) if seq.request.params.logprobs is not None]
        # Reported log-probabilities are the model's own, before anything below changes the logits.
        logprobs = torch.log_softmax(logits[wanting], dim=-1) if wanting else None
        for row, seq in enumerate(sequences):
            if seq.adjuster is not None:
                seq.adjuster.apply(logits[row], seq.generated)
        self._mask_grammars(sequences, logits)
        tokens = choose_tokens(logits, [s.request.params for s in sequences], [s.generator for s in sequences])
        chosen: list[TokenLogprob | None] = [None] * len(sequences)
        if logprobs is not None:
            for position, row in enumerate(wanting):
                top = sequences[row].request.params.logprobs or 0
                chosen[row] = token_logprobs(logprobs[position], tokens[row], top)
        return tokens, chosen

    def _mask_grammars(self, sequences: list[Sequence], logits: torch.Tensor) -> None:
        rows = [row for row, seq in enumerate(sequences) if seq.matcher is not None]
        if not rows:
            return
        assert self.grammar is not None, "a constrained request reached an engine without a grammar engine"
        allowed = self.grammar.allowed([sequences[row].matcher for row in rows])  # type: ignore[misc]
        index = torch.tensor(rows, dtype=torch.long, device=logits.device)
        vocab = min(allowed.shape[1], logits.shape[1])
        masked = logits.index_select(0, index)
        masked[:, :vocab].masked_fill_(~allowed[:, :vocab].to(logits.device), float("-inf"))
        masked[:, vocab:] = float("-inf")
        logits.index_copy_(0, index, masked)
