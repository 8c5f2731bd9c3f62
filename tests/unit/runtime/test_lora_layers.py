"""The batched LoRA layer against PEFT's own layer, and the slot bookkeeping."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from enginehouse.runtime.lora.layers import BatchedLoRALinear, LoRARouting, MultiLoRAModel, describe_target
from enginehouse.runtime.lora.peft_format import read_lora_adapter
from enginehouse.runtime.lora.slots import SlotTable

Q_PROJ = "model.layers.0.self_attn.q_proj"
K_PROJ = "model.layers.1.self_attn.k_proj"


def _targets(model: torch.nn.Module) -> dict:
    return {name: describe_target(m) for name, m in model.named_modules() if name}


def test_mixed_slots_match_peft_mixed_batch(tiny_llama_dir: Path, tiny_adapter_dirs: list[Path]) -> None:
    base = AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir), dtype=torch.float32)
    targets = _targets(base)
    first = read_lora_adapter(tiny_adapter_dirs[0], targets, max_rank=16)  # r=8
    second = read_lora_adapter(tiny_adapter_dirs[1], targets, max_rank=16)  # r=4, zero-padded
    reference = AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir), dtype=torch.float32)
    peft = PeftModel.from_pretrained(reference, str(tiny_adapter_dirs[0]), adapter_name="a")
    peft.load_adapter(str(tiny_adapter_dirs[1]), adapter_name="b")
    peft_layer = peft.get_submodule(f"base_model.model.{Q_PROJ}")

    routing = LoRARouting()
    layer = BatchedLoRALinear(base.get_submodule(Q_PROJ), targets[Q_PROJ], num_slots=3, max_rank=16, routing=routing)
    layer.set_slot(1, first.modules[Q_PROJ])
    layer.set_slot(2, second.modules[Q_PROJ])

    x = torch.randn(4, 5, 64)
    routing.set_rows([1, 0, 2, 1], x.device)
    ours = layer(x)
    expected = peft_layer(x, adapter_names=["a", "__base__", "b", "a"])
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(ours[0], ours[1])


def test_base_only_batch_skips_lora_exactly(tiny_llama_dir: Path, tiny_adapter_dirs: list[Path]) -> None:
    base = AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir), dtype=torch.float32)
    targets = _targets(base)
    weights = read_lora_adapter(tiny_adapter_dirs[0], targets, max_rank=8)
    routing = LoRARouting()
    inner = base.get_submodule(Q_PROJ)
    layer = BatchedLoRALinear(inner, targets[Q_PROJ], num_slots=2, max_rank=8, routing=routing)
    layer.set_slot(1, weights.modules[Q_PROJ])
    x = torch.randn(2, 3, 64)
    routing.set_rows([0, 0], x.device)
    assert torch.equal(layer(x), inner(x))
    routing.clear()
    assert torch.equal(layer(x), inner(x))


def test_gathered_weights_follow_new_rows_and_rewritten_slots(
    tiny_llama_dir: Path, tiny_adapter_dirs: list[Path]
) -> None:
    # The layer keeps its per-row gather between forwards; it must notice both kinds of change.
    base = AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir), dtype=torch.float32)
    targets = _targets(base)
    first = read_lora_adapter(tiny_adapter_dirs[0], targets, max_rank=16).modules[Q_PROJ]
    second = read_lora_adapter(tiny_adapter_dirs[1], targets, max_rank=16).modules[Q_PROJ]
    routing = LoRARouting()
    layer = BatchedLoRALinear(base.get_submodule(Q_PROJ), targets[Q_PROJ], num_slots=3, max_rank=16, routing=routing)
    layer.set_slot(1, first)
    layer.set_slot(2, second)
    x = torch.randn(2, 1, 64)

    def fresh(rows: list[int]) -> torch.Tensor:
        other = BatchedLoRALinear(layer.base, targets[Q_PROJ], num_slots=3, max_rank=16, routing=LoRARouting())
        other.set_slot(1, first)
        other.set_slot(2, second)
        other.routing.set_rows(rows, x.device)
        return other(x)

    routing.set_rows([1, 2], x.device)
    before = layer(x)
    routing.clear()
    routing.set_rows([1, 2], x.device)
    torch.testing.assert_close(layer(x), before, rtol=0, atol=0)
    routing.set_rows([2, 1], x.device)
    torch.testing.assert_close(layer(x), fresh([2, 1]), rtol=0, atol=0)
    layer.set_slot(1, second)  # the slot now holds another adapter; the rows stay the same
    torch.testing.assert_close(layer(x), fresh([2, 2]), rtol=0, atol=0)


def test_write_slot_wraps_lazily_and_clears_what_the_new_adapter_does_not_target(
    tiny_llama_dir: Path, tiny_adapter_dirs: list[Path]
) -> None:
    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir), dtype=torch.float32)
    lora = MultiLoRAModel(model, num_slots=2, max_rank=8)
    qkvo = read_lora_adapter(tiny_adapter_dirs[1], lora.targets, max_rank=8)
    qv = read_lora_adapter(tiny_adapter_dirs[0], lora.targets, max_rank=8)
    assert not lora.wrapped
    lora.write_slot(1, qkvo.modules)
    assert set(lora.wrapped) == set(qkvo.modules)
    assert isinstance(model.get_submodule(K_PROJ), BatchedLoRALinear)
    assert lora.wrapped[K_PROJ].ranks[1] == 4
    lora.write_slot(1, qv.modules)  # qv has no k_proj: slot 1 there must be empty again
    assert lora.wrapped[K_PROJ].ranks[1] == 0
    assert torch.count_nonzero(lora.wrapped[K_PROJ].lora_b[1]) == 0
    assert not isinstance(model.get_submodule("model.layers.0.mlp.up_proj"), BatchedLoRALinear)
    with pytest.raises(ValueError):
        lora.write_slot(0, qv.modules)


def test_slot_table_reuses_resident_adapters_and_evicts_least_recently_used() -> None:
    table = SlotTable(2)
    a = table.acquire(101)
    b = table.acquire(102)
    assert a is not None and b is not None and a.needs_write and b.needs_write and a.slot != b.slot
    again = table.acquire(101)
    assert again is not None and again.slot == a.slot and not again.needs_write
    assert table.acquire(103) is None  # both slots pinned: the request waits
    table.release(a.slot, 2)
    c = table.acquire(103)
    assert c is not None and c.slot == a.slot and c.needs_write
    assert table.slot_of(101) is None


def test_slot_table_never_evicts_a_pinned_slot() -> None:
    table = SlotTable(2)
    first = table.acquire(1, count=3)
    second = table.acquire(2)
    assert first is not None and second is not None
    table.release(second.slot)
    third = table.acquire(3)
    assert third is not None and third.slot == second.slot
    table.release(first.slot, 2)
    assert table.acquire(4) is None  # first still has one reference
    assert table.pinned() == 2
