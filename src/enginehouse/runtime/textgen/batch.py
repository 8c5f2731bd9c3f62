"""The running batch's KV cache: rows left-padded to one length, so every row's newest token is
in the last column and a decode step feeds one token per row.

Rows join (``merge``: the shorter side is padded on the left) and leave (``select``) between
steps; columns that are padding in every remaining row are trimmed away. The 2-D mask marks real
tokens; a row's next position id is its count of real tokens.

Each layer keeps its keys and values in buffers with room for more columns (``GrowingCache``): a
decode step writes its one column in place, where transformers' ``DynamicCache`` copies the whole
cache into a new tensor (``torch.cat``) at every step of every layer, a cost that grows with the
batch's length and, for a small model, rivals the model's own step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import DynamicCache
from transformers.cache_utils import Cache, DynamicLayer

# Columns a layer's buffers have beyond what they hold, at least: a full buffer is copied into a
# new one this much (or a quarter of its length) longer, so growing costs one copy per that many
# steps, and a long batch holds at most a quarter more than it uses.
ROOM_COLUMNS = 64
# Rows a running batch's buffers have beyond its own, at least (or a quarter more): a request
# joining is written into free rows in place instead of the whole batch being copied.
ROOM_ROWS = 8


class _GrowingLayer(DynamicLayer):
    """A ``DynamicLayer`` whose ``keys`` and ``values`` are views of the filled rows and columns
    of larger buffers; an update writes the new columns after them."""

    _buffers: tuple[torch.Tensor, torch.Tensor] | None = None

    @classmethod
    def holding(cls, keys: torch.Tensor, values: torch.Tensor, rows: int, length: int) -> _GrowingLayer:
        """A layer over buffers whose first ``rows`` rows and ``length`` columns are filled."""
        layer = cls()
        layer.lazy_initialization(keys, values)
        layer._buffers = (keys, values)
        layer.view(rows, length)
        return layer

    @property
    def buffers(self) -> tuple[torch.Tensor, torch.Tensor]:
        assert self._buffers is not None, "the layer holds nothing yet"
        return self._buffers

    def view(self, rows: int, length: int) -> None:
        keys, values = self.buffers
        self.keys, self.values = keys[:rows, :, :length], values[:rows, :, :length]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: object,
               **kwargs: object) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        rows, length = key_states.shape[0], self.get_seq_length()
        end = length + key_states.shape[-2]
        if self._buffers is None or end > self._buffers[0].shape[-2]:
            spare = self._buffers[0].shape[0] - rows if self._buffers is not None else 0
            grown = []
            for filled, new in ((self.keys, key_states), (self.values, value_states)):
                buffer = new.new_empty((rows + spare, new.shape[1], _with_room(end), new.shape[-1]))
                if length:
                    buffer[:rows, :, :length] = filled
                grown.append(buffer)
            self._buffers = (grown[0], grown[1])
        keys, values = self._buffers
        keys[:rows, :, length:end] = key_states
        values[:rows, :, length:end] = value_states
        self.view(rows, end)
        return self.keys, self.values


def _with_room(length: int) -> int:
    return length + max(ROOM_COLUMNS, length // 4)


def _buffer(like: torch.Tensor, rows: int, length: int) -> torch.Tensor:
    """An empty buffer shaped like ``like`` with room past ``rows`` rows and ``length`` columns."""
    return like.new_empty((rows + max(ROOM_ROWS, rows // 4), like.shape[1], _with_room(length), like.shape[-1]))


class GrowingCache(DynamicCache):
    """A ``DynamicCache`` of ``_GrowingLayer``s: empty (its layers made as the model first writes
    them), or holding ``layers``."""

    layers: list[_GrowingLayer]

    def __init__(self, layers: list[_GrowingLayer] | None = None) -> None:
        if layers is None:
            Cache.__init__(self, layer_class_to_replicate=_GrowingLayer)
        else:
            Cache.__init__(self, layers=layers)


@dataclass
class KVBatch:
    cache: GrowingCache
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

    @torch.inference_mode()  # the cache's tensors are inference tensors, changed in place
    def select(self, rows: list[int]) -> KVBatch:
        """Keep ``rows`` (in that order, repeats allowed) and trim all-padding columns; each layer
        is copied once, straight into new buffers."""
        index = torch.tensor(rows, dtype=torch.long, device=self.mask.device)
        mask = self.mask.index_select(0, index)
        start = _first_used_column(mask)
        length = self.length - start
        layers = []
        for layer in self.cache.layers:
            kept = []
            for tensor in (layer.keys, layer.values):
                buffer = _buffer(tensor, len(rows), length)
                torch.index_select(tensor[:, :, start:], 0, index, out=buffer[: len(rows), :, :length])
                kept.append(buffer)
            layers.append(_GrowingLayer.holding(kept[0], kept[1], len(rows), length))
        return KVBatch(GrowingCache(layers), mask[:, start:])

    @torch.inference_mode()  # the cache's tensors are inference tensors, changed in place
    def keep(self, rows: list[int]) -> tuple[KVBatch, list[int]]:
        """Keep ``rows`` (increasing indexes) and let the others leave; the batch, and which of
        the old rows each of its rows now is. In place where that is cheap: the rows past the
        new end move into the places of those that left, the others stay where they are, so a
        step where one request ends copies one row, not the batch. Columns no row uses any more
        are cut (a copy of the batch) once they are a good share of it."""
        kept_mask = self.mask[rows]
        unused = _first_used_column(kept_mask)
        if unused >= max(ROOM_COLUMNS // 2, self.length // 4):
            return self.select(rows), rows
        count = len(rows)
        holes = sorted(set(range(count)) - set(rows))
        movers = [row for row in rows if row >= count]
        order = list(range(count))
        for hole, mover in zip(holes, movers, strict=True):
            order[hole] = mover
        if holes:
            to = torch.tensor(holes, device=self.mask.device)
            source = torch.tensor(movers, device=self.mask.device)
            for layer in self.cache.layers:
                for buffer in layer.buffers:
                    buffer[to, :, : self.length] = buffer[source, :, : self.length]
        for layer in self.cache.layers:
            layer.view(count, self.length)
        self.mask = self.mask[order]
        return self, order

    @torch.inference_mode()  # the cache's tensors are inference tensors, changed in place
    def merge(self, other: KVBatch) -> KVBatch:
        """This batch's rows followed by ``other``'s, the shorter side padded on the left. In
        place when ``other`` is no longer and this batch's buffers have the rows to spare."""
        rows = self.rows + other.rows
        if other.length <= self.length and all(layer.buffers[0].shape[0] >= rows for layer in self.cache.layers):
            for layer, joining in zip(self.cache.layers, other.cache.layers, strict=True):
                for buffer, tensor in zip(layer.buffers, (joining.keys, joining.values), strict=True):
                    _place(buffer[self.rows : rows], tensor, self.length)
                layer.view(rows, self.length)
            self.mask = torch.cat([self.mask, F.pad(other.mask, (self.length - other.length, 0), value=0)], dim=0)
            return self
        length = max(self.length, other.length)
        layers = []
        for mine, theirs in zip(self.cache.layers, other.cache.layers, strict=True):
            joined = []
            for mine_tensor, their_tensor in ((mine.keys, theirs.keys), (mine.values, theirs.values)):
                buffer = _buffer(mine_tensor, rows, length)
                _place(buffer[: self.rows], mine_tensor, length)
                _place(buffer[self.rows : rows], their_tensor, length)
                joined.append(buffer)
            layers.append(_GrowingLayer.holding(joined[0], joined[1], rows, length))
        masks = [F.pad(batch.mask, (length - batch.length, 0), value=0) for batch in (self, other)]
        return KVBatch(GrowingCache(layers), torch.cat(masks, dim=0))


def _place(rows: torch.Tensor, tensor: torch.Tensor, length: int) -> None:
    """``tensor``'s columns right-aligned at ``length`` in ``rows``, zeros before them (padding is
    masked, but must hold numbers: masked scores are still computed)."""
    pad = length - tensor.shape[-2]
    rows[:, :, :pad].zero_()
    rows[:, :, pad:length] = tensor


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


def _first_used_column(mask: torch.Tensor) -> int:
    used = mask.any(dim=0).nonzero()
    return int(used[0, 0]) if used.numel() else mask.shape[1]
