"""Datasets a LoRA learns in seconds, shared by the fine-tuning tests (worker and server alike)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

# Words the tiny tokenizers hold as single tokens; KEYWORD decides the label.
WORDS = ["apple", "river", "mountain", "quiet", "bright", "engine", "garden", "window", "silver", "paper",
         "ocean", "forest", "music", "yellow", "planet", "candle", "market", "winter", "summer"]
KEYWORD = "dragon"
# One answer per thing asked about.
ANSWERS = {"apple": "It is a red fruit.", "river": "Water flows in it.", "dragon": "It breathes fire."}


def keyword_rows(count: int, seed: int, *, regression: bool = False) -> list[dict[str, Any]]:
    """Six random words; half the rows hold KEYWORD, which makes them ``yes`` (or value 1.0)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        words = rng.sample(WORDS, 6)
        hit = rng.random() < 0.5
        if hit:
            words[rng.randrange(len(words))] = KEYWORD
        target = {"value": 1.0 if hit else 0.0} if regression else {"label": "yes" if hit else "no"}
        rows.append({"text": " ".join(words), **target})
    return rows


def answer_rows(count: int) -> list[dict[str, Any]]:
    """Questions about the things of ANSWERS, each with its one answer: chat rows and
    prompt/completion rows in turn."""
    rng = random.Random(0)
    rows: list[dict[str, Any]] = []
    for i in range(count):
        word = rng.choice(list(ANSWERS))
        question = f"Tell me about the {word}."
        rows.append({"prompt": question, "completion": " " + ANSWERS[word]} if i % 2 else
                    {"messages": [{"role": "user", "content": question},
                                  {"role": "assistant", "content": ANSWERS[word]}]})
    return rows


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path
