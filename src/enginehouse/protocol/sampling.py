"""How one generation request wants its tokens chosen, independent of any wire format.

The OpenAI request models turn into this; the replica's engine consumes it. It has no torch or
HTTP dependency so both sides of the wire can share it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class SamplingParams:
    # None: the serving layer picks a default from the prompt length and the model's context.
    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    # 0 (or -1 on the wire) disables top-k filtering.
    top_k: int = 0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    n: int = 1
    ignore_eos: bool = False

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def with_max_tokens(self, max_tokens: int) -> SamplingParams:
        return dataclasses.replace(self, max_tokens=max_tokens)
