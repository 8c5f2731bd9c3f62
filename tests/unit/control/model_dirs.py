"""Base model directories for sizing tests, described without their weights: a ``config.json``
and a safetensors file holding only its header (the 8-byte length and the JSON), which is all
sizing reads. A multi-gigabyte model costs a few kilobytes."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from enginehouse.core.sizing import DTYPE_BYTES

Tensors = dict[str, tuple[str, list[int]]]  # name → (safetensors dtype, shape)

LLAMA_3_8B: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
    "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
    "intermediate_size": 14336, "vocab_size": 128256, "max_position_embeddings": 8192,
    "torch_dtype": "bfloat16", "tie_word_embeddings": False,
}
LLAMA_3_2_1B: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 2048,
    "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64,
    "intermediate_size": 8192, "vocab_size": 128256, "max_position_embeddings": 131072,
    "torch_dtype": "bfloat16", "tie_word_embeddings": True,
}


def llama_tensors(config: dict[str, Any], dtype: str = "BF16") -> Tensors:
    hidden, inter, vocab = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    head_dim = config.get("head_dim") or hidden // config["num_attention_heads"]
    q, kv = config["num_attention_heads"] * head_dim, config["num_key_value_heads"] * head_dim
    tensors: Tensors = {"model.embed_tokens.weight": (dtype, [vocab, hidden]),
                        "model.norm.weight": (dtype, [hidden])}
    if not config.get("tie_word_embeddings"):
        tensors["lm_head.weight"] = (dtype, [vocab, hidden])
    for layer in range(config["num_hidden_layers"]):
        prefix = f"model.layers.{layer}."
        tensors.update({
            prefix + "self_attn.q_proj.weight": (dtype, [q, hidden]),
            prefix + "self_attn.k_proj.weight": (dtype, [kv, hidden]),
            prefix + "self_attn.v_proj.weight": (dtype, [kv, hidden]),
            prefix + "self_attn.o_proj.weight": (dtype, [hidden, q]),
            prefix + "mlp.gate_proj.weight": (dtype, [inter, hidden]),
            prefix + "mlp.up_proj.weight": (dtype, [inter, hidden]),
            prefix + "mlp.down_proj.weight": (dtype, [hidden, inter]),
            prefix + "input_layernorm.weight": (dtype, [hidden]),
            prefix + "post_attention_layernorm.weight": (dtype, [hidden]),
        })
    return tensors


def header_only_safetensors(path: Path, tensors: Tensors) -> None:
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, (dtype, shape) in tensors.items():
        size = DTYPE_BYTES[dtype]
        for dim in shape:
            size *= dim
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded)


def model_dir(path: Path, config: dict[str, Any] | None, tensors: Tensors | None = None,
              shards: int = 1) -> Path:
    """``config`` None: no config.json. The tensors are split over ``shards`` files."""
    path.mkdir(parents=True, exist_ok=True)
    if config is not None:
        (path / "config.json").write_text(json.dumps(config))
    names = list((tensors or {}).keys())
    for shard in range(shards if tensors else 0):
        part = {name: tensors[name] for name in names[shard::shards]}  # type: ignore[index]
        header_only_safetensors(path / f"model-{shard + 1:05d}-of-{shards:05d}.safetensors", part)
    return path
