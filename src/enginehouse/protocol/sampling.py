"""How one generation request wants its tokens chosen, independent of any wire format.

The OpenAI request models turn into this; the replica's engine consumes it. It has no torch or
HTTP dependency so both sides of the wire can share it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

GuideKind = Literal["json_schema"]
# A temperature this low is greedy decoding: dividing logits by it overflows float32 to infinity
# (and softmax of infinities is NaN), and what it would sample is the argmax anyway.
GREEDY_BELOW = 1e-5


@dataclass(frozen=True)
class Guide:
    """A constraint every generated token must keep satisfiable (structured output).

    ``spec`` is a JSON schema, as JSON text; the replica compiles it
    with its grammar engine, once per request.
    """

    kind: GuideKind
    spec: str


@dataclass(frozen=True)
class SamplingParams:
    # None: the serving layer picks a default from the prompt length and the model's context.
    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    # 0 (or -1 on the wire) disables top-k filtering.
    top_k: int = 0
    # Drop tokens less likely than min_p × the most likely one's probability (0: off).
    min_p: float = 0.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    n: int = 1
    ignore_eos: bool = False
    # No end (EOS, stop string, grammar end) before this many tokens.
    min_tokens: int = 0
    # OpenAI's penalties over the tokens generated so far: presence once, frequency per use.
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    # Transformers' multiplicative penalty over the prompt's and the generated tokens (1: off).
    repetition_penalty: float = 1.0
    # (token id, bias) pairs added to the logits before sampling.
    logit_bias: tuple[tuple[int, float], ...] = ()
    # None: no log-probabilities; k >= 0: each token's own log-probability and the k most likely.
    logprobs: int | None = None
    # The same for the prompt's tokens (completions with echo).
    prompt_logprobs: int | None = None
    guide: Guide | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_BELOW

    @property
    def adjusts_logits(self) -> bool:
        """Whether anything changes the model's logits before a token is chosen."""
        return bool(
            self.presence_penalty
            or self.frequency_penalty
            or self.repetition_penalty != 1.0
            or self.logit_bias
            or self.min_tokens
        )

    def with_max_tokens(self, max_tokens: int) -> SamplingParams:
        return dataclasses.replace(self, max_tokens=max_tokens)
