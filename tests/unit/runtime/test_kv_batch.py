"""The running batch's KV cache: growing in place, rows leaving and joining, every view holding
exactly what transformers' own DynamicCache would after the same steps."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import DynamicCache

from enginehouse.runtime.textgen.batch import ROOM_COLUMNS, GrowingCache, KVBatch


def _kv(rows: int, length: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(rows, 2, length, 4, generator=generator), torch.randn(rows, 2, length, 4, generator=generator))


def _batch(rows: int, length: int, seed: int, layers: int = 2) -> tuple[KVBatch, list[tuple[torch.Tensor, ...]]]:
    cache, reference = GrowingCache(), []
    for layer in range(layers):
        keys, values = _kv(rows, length, seed + layer)
        cache.update(keys, values, layer)
        reference.append((keys, values))
    mask = torch.ones(rows, length, dtype=torch.long)
    mask[0, : length // 2] = 0  # the first row is a shorter prompt, left-padded
    return KVBatch(cache, mask), reference


def _held(batch: KVBatch) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(layer.keys, layer.values) for layer in batch.cache.layers]


def test_a_step_writes_in_place_until_the_room_runs_out_and_then_grows_keeping_everything() -> None:
    growing, dynamic = GrowingCache(), DynamicCache()
    keys, values = _kv(3, 5, seed=0)
    growing.update(keys, values, 0)
    dynamic.update(keys, values, 0)
    first_buffer = growing.layers[0].keys.data_ptr()
    moved = 0
    for step in range(ROOM_COLUMNS + 10):
        keys, values = _kv(3, 1, seed=step + 1)
        got = growing.update(keys, values, 0)
        want = dynamic.update(keys, values, 0)
        assert all(torch.equal(g, w) for g, w in zip(got, want, strict=True))
        moved += growing.layers[0].keys.data_ptr() != first_buffer
    assert growing.get_seq_length() == dynamic.get_seq_length() == 5 + ROOM_COLUMNS + 10
    assert 0 < moved < ROOM_COLUMNS  # it grew once, not at every step


def test_rows_leave_with_the_columns_no_row_uses_any_more() -> None:
    batch, reference = _batch(3, 6, seed=1)
    batch.mask[:, :2] = 0  # no row uses the first two columns
    kept = batch.select([2, 0, 0])
    assert kept.mask.shape == (3, 4)
    index = torch.tensor([2, 0, 0])
    for (keys, values), (want_k, want_v) in zip(_held(kept), reference, strict=True):
        assert torch.equal(keys, want_k[index][:, :, 2:]) and torch.equal(values, want_v[index][:, :, 2:])
    # And it goes on growing like any cache.
    step = _kv(3, 1, seed=9)
    with torch.inference_mode():  # as the engine steps
        grown = kept.cache.update(*step, 0)
    assert torch.equal(grown[0], torch.cat([reference[0][0][index][:, :, 2:], step[0]], dim=-2))


def test_rows_join_the_shorter_side_padded_on_the_left_with_zeros() -> None:
    running, mine = _batch(2, 7, seed=2)
    joining, theirs = _batch(1, 3, seed=5)
    merged = running.merge(joining)
    assert merged.rows == 3 and merged.length == 7
    assert torch.equal(merged.mask, torch.cat([running.mask, F.pad(joining.mask, (4, 0))], dim=0))
    for (keys, values), (k1, v1), (k2, v2) in zip(_held(merged), mine, theirs, strict=True):
        assert torch.equal(keys, torch.cat([k1, F.pad(k2, (0, 0, 4, 0))], dim=0))
        assert torch.equal(values, torch.cat([v1, F.pad(v2, (0, 0, 4, 0))], dim=0))
    longer, _ = _batch(1, 9, seed=7)
    assert running.merge(longer).length == 9  # the running rows are padded when the newcomer is longer


def test_a_row_leaving_is_replaced_by_the_last_row_in_place() -> None:
    batch, reference = _batch(5, 6, seed=3)
    buffer = batch.cache.layers[0].keys.data_ptr()
    kept, order = batch.keep([0, 2, 3, 4])  # row 1 ends
    assert kept is batch and order == [0, 4, 2, 3]
    assert batch.cache.layers[0].keys.data_ptr() == buffer  # nothing reallocated
    index = torch.tensor(order)
    assert torch.equal(batch.mask, _batch(5, 6, seed=3)[0].mask[index])
    for (keys, values), (want_k, want_v) in zip(_held(batch), reference, strict=True):
        assert torch.equal(keys, want_k[index]) and torch.equal(values, want_v[index])


def test_a_row_joins_into_spare_rows_in_place_and_a_longer_one_makes_room() -> None:
    running, mine = _batch(2, 7, seed=2)
    running = running.select([0, 1])  # a running batch's buffers have rows to spare
    buffer = running.cache.layers[0].keys.data_ptr()
    joining, theirs = _batch(1, 3, seed=5)
    merged = running.merge(joining)
    assert merged is running and merged.cache.layers[0].keys.data_ptr() == buffer
    for (keys, _), (k1, _), (k2, _) in zip(_held(merged), mine, theirs, strict=True):
        assert torch.equal(keys, torch.cat([k1, F.pad(k2, (0, 0, 4, 0))], dim=0))
    longer, _ = _batch(1, 9, seed=8)
    assert merged.merge(longer).length == 9
