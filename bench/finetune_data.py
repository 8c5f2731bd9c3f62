"""The fine-tune benchmark's datasets: rows a LoRA can learn, of varied lengths, fixed by a seed.

Text generation: questions about a thing, each thing with one answer of its own (4 to 24 words),
as chat rows and prompt/completion rows in turn, so both of the worker's renderings are trained.
Classification: word-salad sentences of 6 to 24 words whose label is the keyword they hold (or
``none``). Lengths vary on purpose: how a loop pads its batches is part of what it costs.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

_WORDS = (
    "apple river mountain quiet bright engine garden window silver paper ocean forest music "
    "yellow planet thunder candle market winter summer doctor teacher pencil bottle rocket "
    "library kitchen science history morning evening journey bridge castle coffee"
).split()
# A classification row's label is the one of these it holds, or "none".
KEYWORDS = ("dragon", "lantern", "harbor")
NO_KEYWORD = "none"


def answer_rows(count: int, seed: int = 0) -> list[dict[str, Any]]:
    """``count`` text-generation rows: chat rows and prompt/completion rows alternately."""
    rng = random.Random(seed)
    answers = {word: " ".join(rng.choice(_WORDS) for _ in range(rng.randint(4, 24))).capitalize() + "."
               for word in _WORDS}
    rows: list[dict[str, Any]] = []
    for i in range(count):
        word = rng.choice(_WORDS)
        context = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(0, 12)))
        question = f"Tell me about the {word}" + (f", thinking of {context}." if context else ".")
        rows.append({"prompt": question, "completion": " " + answers[word]} if i % 2 else
                    {"messages": [{"role": "user", "content": question},
                                  {"role": "assistant", "content": answers[word]}]})
    return rows


def keyword_rows(count: int, seed: int = 0) -> list[dict[str, Any]]:
    """``count`` classification rows, the four labels about equally often."""
    rng = random.Random(seed)
    labels = [*KEYWORDS, NO_KEYWORD]
    rows = []
    for i in range(count):
        label = labels[i % len(labels)]
        words = [rng.choice(_WORDS) for _ in range(rng.randint(6, 24))]
        if label != NO_KEYWORD:
            words[rng.randrange(len(words))] = label
        rows.append({"text": " ".join(words).capitalize() + ".", "label": label})
    rng.shuffle(rows)
    return rows


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path
