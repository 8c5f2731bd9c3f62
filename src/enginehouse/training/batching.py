"""Tokenised rows, and the order they are batched in.

Rows are tokenised once, before training; each batch is padded to its own longest row. On a CPU
padding is pure waste, so training batches are cut from windows of similar-length rows (as
Hugging Face's ``group_by_length`` does) and evaluation runs the rows sorted by length.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch

# How many batches' worth of shuffled rows are sorted by length together: enough to cut most of
# the padding, few enough that a batch still mixes rows from all over the dataset.
_WINDOW_BATCHES = 16
IGNORED = -100  # the label of a token no loss is computed on (torch's cross-entropy default)


@dataclass(frozen=True)
class Encoded:
    line: int  # the row's line in its file, for messages about it
    input_ids: list[int]
    # Per-token labels (IGNORED where not trained) for text generation, a label id for
    # classification, the value for regression.
    target: list[int] | int | float


def training_batches(lengths: Sequence[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """One epoch's batches of row indices: every row once, in an order drawn from ``rng``."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    window = batch_size * _WINDOW_BATCHES
    batches: list[list[int]] = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start:start + window], key=lambda i: lengths[i], reverse=True)
        batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def evaluation_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def pad(rows: Sequence[Sequence[int]], value: int) -> torch.Tensor:
    """``rows`` padded on the right to the longest, as one ``[len(rows), longest]`` tensor."""
    width = max(len(row) for row in rows)
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, :len(row)] = torch.tensor(row, dtype=torch.long)
    return out


def per_token_batch(rows: Sequence[Encoded], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    """``input_ids``, ``attention_mask`` and per-token ``labels`` (IGNORED in the padding) of rows
    whose targets are a label per token (text generation, NER)."""
    ids = [row.input_ids for row in rows]
    labels = [row.target for row in rows]
    return {
        "input_ids": pad(ids, pad_id).to(device),
        "attention_mask": attention_mask(ids).to(device),
        "labels": pad(labels, IGNORED).to(device),  # type: ignore[arg-type]
    }


def attention_mask(rows: Sequence[Sequence[int]]) -> torch.Tensor:
    width = max(len(row) for row in rows)
    lengths = torch.tensor([len(row) for row in rows])
    return (torch.arange(width)[None, :] < lengths[:, None]).long()
