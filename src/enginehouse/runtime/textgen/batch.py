"""The running batch's KV cache: rows left-padded to one length, so every row's newest token is
in the last column and a decode step feeds one token per row.

Rows join (``merge``: the shorter side is padded on the left) and leave (``select``) between
steps; columns that are padding in every remaining row are trimmed away. The 2-D mask marks real
tokens; a row's next position id is its count of real tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import DynamicCache


@dataclass
class KVBatch:
    cache: DynamicCache
    mask: torch.Tensor  # [rows, length], 1 where a real token sits

    @property
    def rows(self) -> int:
        return int(self.mask.shape[0])

    @property
    def length(self) -> int:
        return int(self.mask.shape[1])

    def next_positions(self) -> torch.Tensor:
        """``[rows, 1]`` position ids for the token each row feeds next."""
        return self.mask.sum(dim=-1, keepdim=True)

    def grown_mask(self) -> torch.Tensor:
        """The mask for a decode step: every row adds one real token."""
        ones = torch.ones((self.rows, 1), dtype=self.mask.dtype, device=self.mask.device)
        return torch.cat([self.mask, ones], dim=-1)

    def select(self, rows: list[int]) -> KVBatch:
        """Keep ``rows`` (in that order, repeats allowed) and trim all-padding columns."""
        index = torch.tensor(rows, dtype=torch.long, device=self.mask.device)
        mask = self.mask.index_select(0, index)
        start = _first_used_column(mask)
        layers = [
            (k.index_select(0, index)[:, :, start:], v.index_select(0, index)[:, :, start:])
            for k, v in _layers(self.cache)
        ]
        return KVBatch(_cache_of(layers), mask[:, start:])

    def merge(self, other: KVBatch) -> KVBatch:
        """This batch's rows followed by ``other``'s."""
        length = max(self.length, other.length)
        mine, theirs = _pad_left(self, length), _pad_left(other, length)
        layers = [
            (torch.cat([k1, k2], dim=0), torch.cat([v1, v2], dim=0))
            for (k1, v1), (k2, v2) in zip(_layers(mine.cache), _layers(theirs.cache))
        ]
        return KVBatch(_cache_of(layers), torch.cat([mine.mask, theirs.mask], dim=0))


def left_pad(prompts: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Input ids, mask and position ids ``[rows, longest]`` for a prefill of ``prompts``."""
    longest = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), longest), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, longest - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
        mask[row, longest - len(prompt) :] = 1
    positions = (mask.cumsum(dim=-1) - 1).clamp(min=0)
    return ids.to(device), mask.to(device), positions.to(device)


def _layers(cache: DynamicCache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(layer.keys, layer.values) for layer in cache.layers]


def _cache_of(layers: list[tuple[torch.Tensor, torch.Tensor]]) -> DynamicCache:
    return DynamicCache(ddp_cache_data=layers)


def _first_used_column(mask: torch.Tensor) -> int:
    used = mask.any(dim=0).nonzero()
    return int(used[0, 0]) if used.numel() else mask.shape[1]


def _pad_left(batch: KVBatch, length: int) -> KVBatch:
    extra = length - batch.length
    if extra == 0:
        return batch
    layers = [(F.pad(k, (0, 0, extra, 0)), F.pad(v, (0, 0, extra, 0))) for k, v in _layers(batch.cache)]
    return KVBatch(_cache_of(layers), F.pad(batch.mask, (extra, 0), value=0))
