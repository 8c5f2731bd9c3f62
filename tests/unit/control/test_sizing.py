"""Sizing for ``deployment_option: "auto"`` (SPEC §4.5): estimates against figures worked out by
hand for known configurations, and the option each one lands on."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from enginehouse.core import model_files, options, placement, sizing
from enginehouse.core.options import GB, DeploymentOption
from enginehouse.core.specs import EngineSpec, RuntimeOptions
from enginehouse.core.task_types import TaskType
from enginehouse.errors import ValidationFailedError
from enginehouse.services import engines
from enginehouse.services.sizing import select_option
from tests.unit.control.model_dirs import LLAMA_3_2_1B, LLAMA_3_8B, llama_tensors, model_dir

GiB = 2**30
# Llama-3-8B: embeddings and lm_head, the final norm, and 32 layers of q, o (4096²), k, v
# (1024 × 4096), gate, up, down (14336 × 4096) and two norms.
PARAMS_8B = 2 * 128256 * 4096 + 4096 + 32 * (2 * 4096 * 4096 + 2 * 1024 * 4096 + 3 * 14336 * 4096 + 2 * 4096)
# Llama-3.2-1B: tied embeddings, 16 layers, 32 query heads and 8 KV heads of 64.
PARAMS_1B = 128256 * 2048 + 2048 + 16 * (2 * 2048 * 2048 + 2 * 512 * 2048 + 3 * 8192 * 2048 + 2 * 2048)
NOTHING_AVAILABLE = options.listing([])


def spec(base_model: str | Path, option: str = "auto", **runtime: object) -> EngineSpec:
    return EngineSpec(name="e", base_model=str(base_model), task_type="text-generation",
                      deployment_option=option, runtime_options=RuntimeOptions(**runtime))


def cpu_with(memory_gb: float) -> DeploymentOption:
    return DeploymentOption("cpu", "cpu", None, None, 4, memory_gb, (0.0, 0.0))


@pytest.fixture()
def llama_8b(tmp_path: Path) -> Path:
    return model_dir(tmp_path / "llama-3-8b", LLAMA_3_8B, llama_tensors(LLAMA_3_8B), shards=4)


@pytest.fixture()
def llama_1b(tmp_path: Path) -> Path:
    return model_dir(tmp_path / "llama-3.2-1b", LLAMA_3_2_1B, llama_tensors(LLAMA_3_2_1B))


def test_parameters_are_counted_from_the_headers_of_every_shard(llama_8b: Path) -> None:
    assert PARAMS_8B == 8_030_261_248
    facts = model_files.read_model_facts(str(llama_8b))
    assert facts.parameters_by_dtype == {"BF16": PARAMS_8B}
    assert facts.shape is not None and (facts.shape.num_kv_heads, facts.shape.head_dim) == (8, 128)
    assert facts.notes == ()


def test_llama_3_8b_at_8k_context_and_16_sequences_needs_more_than_a_24gb_card(llama_8b: Path) -> None:
    chosen = select_option(spec(llama_8b, max_model_len=8192, max_batch_size=16), NOTHING_AVAILABLE)
    lora_dims = (4096 + 4096) + 2 * (4096 + 1024) + (4096 + 4096) + 2 * (4096 + 14336) + (14336 + 4096)
    expected = {
        "weights": PARAMS_8B * 2,  # bfloat16, the checkpoint's dtype, on a GPU
        "kv_cache": 2 * 32 * 8 * 128 * 2 * 8192 * 16,  # K and V × layers × KV heads × head dim × bytes × tokens
        "adapter_slots": (8 + 1) * 64 * 32 * lora_dims * 2,  # 8 slots + the base's, rank 64
        "activations": 2048 * (4 * 4096 + 2 * 14336) * 2 + 2048 * 128256 * 4,
        "overhead": GiB,
    }
    assert chosen["estimate"]["terms"] == expected
    assert chosen["estimate"]["total_bytes"] == sum(expected.values())
    assert sum(expected.values()) * 1.1 > 24 * GB
    # The smallest that holds ~42 GB with headroom: the L40S, before the 80 GB cards.
    assert chosen["name"] == "gpu-l40s-48gb"
    assert "waits" in chosen["reason"] and "weights 16.1 GB" in chosen["reason"]


def test_a_1b_model_fits_an_l4(llama_1b: Path) -> None:
    chosen = select_option(spec(llama_1b), NOTHING_AVAILABLE)
    terms = chosen["estimate"]["terms"]
    assert terms["weights"] == PARAMS_1B * 2
    # Defaults: the model's 131072 positions capped at 4096, 32 sequences.
    assert terms["kv_cache"] == 2 * 16 * 8 * 64 * 2 * 4096 * 32
    assert chosen["estimate"]["inputs"]["max_model_len"] == 4096
    # The L4 and the A10G both hold it; the L4 costs less.
    assert chosen["name"] == "gpu-l4-24gb"


def test_an_available_option_wins_over_a_smaller_one_no_provider_gives(llama_1b: Path) -> None:
    local = options.local_gpu(0, "NVIDIA H200", 141 * GB)
    chosen = select_option(spec(llama_1b), options.listing([local]))
    assert chosen["name"] == "local-gpu0-h200-141gb"
    assert "among the options available now" in chosen["reason"]


def test_the_cpu_serves_float32_and_is_taken_when_the_model_fits_in_host_memory(llama_1b: Path) -> None:
    chosen = select_option(spec(llama_1b), options.listing([cpu_with(64)]))
    assert chosen["name"] == "cpu"
    assert chosen["estimate"]["terms"]["weights"] == PARAMS_1B * 4
    assert chosen["estimate"]["inputs"]["dtype"] == "float32"


def test_a_tiny_model_picks_cpu(tmp_path: Path) -> None:
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    import numpy as np

    config = {"model_type": "llama", "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 4,
              "intermediate_size": 32, "vocab_size": 100, "max_position_embeddings": 128}
    directory = model_dir(tmp_path / "tiny", config)
    safetensors_numpy.save_file({"embed": np.zeros((100, 16), np.float32)}, str(directory / "model.safetensors"))
    chosen = select_option(spec(directory), options.default_listing())
    assert chosen["name"] == "cpu"
    assert chosen["estimate"]["terms"]["weights"] == 100 * 16 * 4


def test_a_model_no_option_holds_is_422_naming_its_estimate(tmp_path: Path, session: Session,
                                                               org_id: str) -> None:
    config = {**LLAMA_3_8B, "hidden_size": 16384, "num_hidden_layers": 128}
    directory = model_dir(tmp_path / "2t", config, {"weights": ("BF16", [2_000_000_000_000])})
    with pytest.raises(ValidationFailedError) as refused:
        engines.create_engine(session, org_id, spec(directory))
    assert refused.value.code == "model_too_large" and refused.value.param == "base_model"
    assert "weights 4000.0 GB" in refused.value.message
    assert "gpu-h100-80gb-x8" in refused.value.message


def test_auto_records_the_estimate_and_waits_for_an_option_no_provider_gives(
    llama_8b: Path, session: Session, org_id: str
) -> None:
    offers = options.listing([cpu_with(16)])
    engine = engines.create_engine(session, org_id, spec(llama_8b, max_model_len=8192, max_batch_size=16),
                                   offers=offers)
    assert engine.selected_option["name"] == "gpu-l40s-48gb"
    assert set(engine.selected_option["estimate"]["terms"]) == {
        "weights", "kv_cache", "adapter_slots", "activations", "overhead"}
    assert engine.status == "Provisioning"
    assert engine.status_reason == options.waiting_reason("gpu-l40s-48gb")


def test_without_config_json_only_weights_and_overhead_are_counted(tmp_path: Path) -> None:
    directory = model_dir(tmp_path / "bare", None, {"w": ("F16", [1000, 1000])})
    chosen = select_option(spec(directory), NOTHING_AVAILABLE)
    assert chosen["estimate"]["terms"] == {"weights": 2_000_000, "kv_cache": 0, "adapter_slots": 0,
                                           "activations": 0, "overhead": GiB}
    assert "no config.json" in chosen["reason"]


def test_without_safetensors_the_weights_are_sized_from_file_sizes(tmp_path: Path) -> None:
    directory = model_dir(tmp_path / "bin", {**LLAMA_3_2_1B})
    (directory / "pytorch_model.bin").write_bytes(b"\0" * 3000)
    facts = model_files.read_model_facts(str(directory))
    limits = sizing.serving_limits(RuntimeOptions(), TaskType.TEXT_GENERATION, "cpu", facts.shape)
    # Stored as bfloat16 (the config says), served as float32 on a CPU: twice the files.
    assert sizing.estimate_memory(facts, limits).terms["weights"] == 6000
    assert any("file sizes" in note for note in facts.notes)


def test_a_corrupt_header_falls_back_to_file_sizes(tmp_path: Path) -> None:
    directory = model_dir(tmp_path / "corrupt", LLAMA_3_2_1B)
    (directory / "model.safetensors").write_bytes(b"\xff" * 64)
    facts = model_files.read_model_facts(str(directory))
    assert facts.parameters_by_dtype == {} and facts.weight_file_bytes == 64
    assert "model.safetensors has no readable safetensors header" in facts.notes[0]


def test_a_missing_directory_is_sized_by_overhead_and_says_so() -> None:
    chosen = select_option(spec("/models/not-there"), options.default_listing())
    assert chosen["name"] == "cpu"
    assert "does not exist" in chosen["reason"]


def test_a_hub_id_with_the_hub_offline_is_answered_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    facts = model_files.read_model_facts("acme/never-downloaded-model")
    assert facts.shape is None and "offline" in facts.notes[0]


def test_configs_of_other_shapes() -> None:
    vlm = {"model_type": "llava", "torch_dtype": "float16",
           "text_config": {"hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
                           "vocab_size": 32064}}
    shape = sizing.shape_from_config(vlm)
    assert shape is not None
    # No KV heads given: multi-head attention; no head_dim: hidden / heads; no MLP width: 4 × hidden.
    assert (shape.num_kv_heads, shape.head_dim, shape.intermediate_size) == (32, 128, 16384)
    assert shape.torch_dtype == "float16"
    gpt2 = {"n_embd": 768, "n_layer": 12, "n_head": 12, "vocab_size": 50257, "n_positions": 1024}
    assert sizing.shape_from_config(gpt2) == sizing.ModelShape(768, 12, 12, 12, 64, 3072, 50257, 1024, None)
    assert sizing.shape_from_config({"model_type": "resnet", "hidden_sizes": [64, 128]}) is None


def test_encoders_hold_no_kv_cache_and_single_model_types_no_adapter_slots() -> None:
    facts = sizing.ModelFacts(sizing.shape_from_config({"hidden_size": 384, "num_hidden_layers": 6,
                                                        "num_attention_heads": 12, "intermediate_size": 1536,
                                                        "vocab_size": 30522, "max_position_embeddings": 512}),
                              {"F32": 22_000_000})
    limits = sizing.serving_limits(RuntimeOptions(), TaskType.EMBEDDING, "cpu", facts.shape)
    terms = sizing.estimate_memory(facts, limits).terms
    assert terms["kv_cache"] == 0 and terms["adapter_slots"] == 0
    assert terms["activations"] == 32 * 512 * (4 * 384 + 2 * 1536) * 4


def test_headroom_decides_a_near_fit() -> None:
    def chosen(size: int) -> str | None:
        estimate = sizing.MemoryEstimate({"weights": size}, {})
        found = placement.place({"gpu": estimate, "cpu": estimate}, NOTHING_AVAILABLE)
        return found.offer.name if found else None

    assert chosen(21 * GB) == "gpu-l4-24gb"  # 23.1 GB with 10% headroom
    assert chosen(22 * GB) == "gpu-a100-40gb"  # 24.2 GB: no 24 GB card holds it


def test_sizing_assumes_the_runtimes_defaults() -> None:
    from enginehouse.runtime.options import RuntimeOptions as ReplicaOptions

    from enginehouse.runtime.textgen import runner

    defaults = ReplicaOptions()
    for name, value in sizing.RUNTIME_DEFAULTS.items():
        assert getattr(defaults, name) == value, name
    assert runner.DEFAULT_MAX_MODEL_LEN == sizing.DEFAULT_MAX_MODEL_LEN
