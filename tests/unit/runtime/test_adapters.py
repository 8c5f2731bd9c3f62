"""Reading PEFT adapter directories: every refusal says why; the registry's tiers and rules."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from enginehouse.demo.tiny_models import build_lora_adapter, build_tiny_llama
from enginehouse.runtime.lora.layers import describe_target
from enginehouse.runtime.lora.peft_format import AdapterLoadError, read_lora_adapter
from enginehouse.runtime.lora.registry import AdapterRegistry


@pytest.fixture(scope="module")
def targets(tiny_llama_dir: Path) -> dict:
    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir), dtype=torch.float32)
    return {name: describe_target(m) for name, m in model.named_modules() if name}


@pytest.fixture
def copy_adapter(tiny_adapter_dirs: list[Path], tmp_path: Path) -> Callable[..., Path]:
    """A copy of adapter 0 with its config and tensors edited by the test."""

    copies = iter(range(100))

    def make(config: dict | None = None, edit: Callable[[dict], dict] | None = None) -> Path:
        target = tmp_path / f"adapter-{next(copies)}"
        shutil.copytree(tiny_adapter_dirs[0], target)
        if config:
            path = target / "adapter_config.json"
            path.write_text(json.dumps({**json.loads(path.read_text()), **config}))
        if edit:
            weights = target / "adapter_model.safetensors"
            save_file(edit(load_file(str(weights))), str(weights))
        return target

    return make


def _refusal(path: Path, targets: dict, max_rank: int = 64) -> str:
    with pytest.raises(AdapterLoadError) as info:
        read_lora_adapter(path, targets, max_rank=max_rank)
    return str(info.value)


def test_reads_each_fixture_adapter(tiny_adapter_dirs: list[Path], targets: dict) -> None:
    qv, qkvo, rslora = (read_lora_adapter(p, targets, max_rank=64) for p in tiny_adapter_dirs)
    assert qv.rank == 8 and len(qv.modules) == 4  # q and v in 2 layers
    assert qkvo.rank == 4 and len(qkvo.modules) == 8
    q = "model.layers.0.self_attn.q_proj"
    assert qv.modules[q].scaling == pytest.approx(16 / 8)
    assert rslora.modules[q].scaling == pytest.approx(16 / math.sqrt(8))
    assert qv.modules[q].lora_a.shape == (8, 64) and qv.modules[q].lora_b.shape == (64, 8)


def test_alpha_pattern_sets_scaling_per_module(copy_adapter: Callable[..., Path], targets: dict) -> None:
    path = copy_adapter({"alpha_pattern": {"q_proj": 32}})
    weights = read_lora_adapter(path, targets, max_rank=64)
    assert weights.modules["model.layers.1.self_attn.q_proj"].scaling == pytest.approx(32 / 8)
    assert weights.modules["model.layers.1.self_attn.v_proj"].scaling == pytest.approx(16 / 8)


def test_rank_over_the_engine_limit_is_refused(tiny_adapter_dirs: list[Path], targets: dict) -> None:
    message = _refusal(tiny_adapter_dirs[0], targets, max_rank=4)
    assert "rank 8 exceeds the engine's max_lora_rank 4" in message


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"peft_type": "PREFIX_TUNING"}, "only LoRA adapters"),
        ({"use_dora": True}, "DoRA"),
        ({"bias": "all"}, "bias"),
        ({"lora_bias": True}, "lora_bias"),
        ({"modules_to_save": ["lm_head"]}, "modules_to_save"),
        ({"alora_invocation_tokens": [1, 2]}, "not supported"),
    ],
)
def test_unsupported_configs_are_refused(
    copy_adapter: Callable[..., Path], targets: dict, config: dict, expected: str
) -> None:
    assert expected in _refusal(copy_adapter(config), targets)


def test_missing_directory_and_files(tmp_path: Path, copy_adapter: Callable[..., Path], targets: dict) -> None:
    assert "does not exist" in _refusal(tmp_path / "nowhere", targets)
    (tmp_path / "empty").mkdir()
    assert "no adapter_config.json" in _refusal(tmp_path / "empty", targets)
    path = copy_adapter()
    (path / "adapter_model.safetensors").unlink()
    assert "has no adapter_model.safetensors" in _refusal(path, targets)
    (path / "adapter_model.bin").write_bytes(b"pickle")
    assert "safe_serialization" in _refusal(path, targets)


def test_corrupt_files_are_refused(copy_adapter: Callable[..., Path], targets: dict) -> None:
    path = copy_adapter()
    (path / "adapter_config.json").write_text("{not json")
    assert "not readable JSON" in _refusal(path, targets)
    path = copy_adapter()
    weights = path / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    assert "unreadable or corrupt" in _refusal(path, targets)


def _rename(old: str, new: str) -> Callable[[dict], dict]:
    return lambda tensors: {k.replace(old, new): v for k, v in tensors.items()}


def test_tensor_level_problems(copy_adapter: Callable[..., Path], targets: dict) -> None:
    embedding = {"base_model.model.model.embed_tokens.lora_embedding_A": torch.zeros(8, 10)}
    path = copy_adapter(edit=lambda t: {**t, **embedding})
    assert "embedding" in _refusal(path, targets)
    path = copy_adapter(edit=_rename("layers.1.", "layers.7."))
    message = _refusal(path, targets)
    assert "different base model" in message and "model.layers.7.self_attn" in message
    path = copy_adapter(edit=lambda t: {k: v for k, v in t.items() if "lora_B" not in k})
    assert "not both A and B" in _refusal(path, targets)
    path = copy_adapter(edit=lambda t: {**t, "base_model.model.lm_head.modules_to_save.weight": torch.zeros(2)})
    assert "modules_to_save" in _refusal(path, targets)
    path = copy_adapter(edit=lambda t: {k: torch.full_like(v, float("nan")) for k, v in t.items()})
    assert "NaN" in _refusal(path, targets)


def test_adapter_of_another_base_model_is_refused(tmp_path: Path, targets: dict) -> None:
    other_base = build_tiny_llama(tmp_path / "other", hidden_size=32, num_heads=2, num_kv_heads=1)
    adapter = build_lora_adapter(other_base, tmp_path / "other-adapter", seed=5)
    message = _refusal(adapter, targets)
    assert "trained for a different base model" in message and "64->64" in message


def test_registry_load_is_idempotent_and_failures_leave_others_alone(
    tiny_adapter_dirs: list[Path], targets: dict, tmp_path: Path
) -> None:
    reads: list[str] = []

    def reader(path: str):  # type: ignore[no-untyped-def]
        reads.append(path)
        return read_lora_adapter(path, targets, max_rank=64)

    registry = AdapterRegistry(reader, max_cpu_loras=4)
    first = registry.load("one", str(tiny_adapter_dirs[0]))
    assert registry.load("one", str(tiny_adapter_dirs[0])) == first and len(reads) == 1
    with pytest.raises(AdapterLoadError):
        registry.load("one", str(tmp_path / "missing"))  # a bad new path keeps the old version
    assert registry.get("one") == first
    with pytest.raises(AdapterLoadError):
        registry.load("two", str(tmp_path / "missing"))
    snapshot = registry.snapshot()
    assert snapshot["one"] == {"status": "loaded", "path": str(tiny_adapter_dirs[0]), "reason": None}
    assert snapshot["two"]["status"] == "failed" and "does not exist" in snapshot["two"]["reason"]
    replaced = registry.load("one", str(tiny_adapter_dirs[1]))
    assert replaced.load_id != first.load_id and replaced.rank == 4
    assert registry.unload("two") and registry.unload("one") and not registry.unload("one")


def test_registry_host_tier_rereads_evicted_adapters(tiny_adapter_dirs: list[Path], targets: dict) -> None:
    reads: list[str] = []

    def reader(path: str):  # type: ignore[no-untyped-def]
        reads.append(path)
        return read_lora_adapter(path, targets, max_rank=64)

    registry = AdapterRegistry(reader, max_cpu_loras=2)
    entries = [registry.load(f"a{i}", str(p)) for i, p in enumerate(tiny_adapter_dirs)]
    assert registry.host_resident() == [entries[1].load_id, entries[2].load_id]
    handle = registry.acquire(entries[0])  # evicted from host memory: read again
    assert len(reads) == 4 and handle.weights.rank == 8
    assert entries[0].load_id in registry.host_resident()
    registry.acquire(entries[0])
    assert len(reads) == 4
