"""Linear layers packed once for oneDNN (``runtime/packed_linear.py``): a model's logits stay
those of ``nn.Linear`` up to float32 rounding, every plain float32 linear is swapped and nothing
else, a weight another module shares (a tied output layer) is kept while the others are released,
and a replica's engine serves with packed layers (greedy equality with PEFT, across adapters and
batches, is held by test_engine.py and the sweep's equality test, which run on them); embedding
and NER replicas pack their encoders too, with the same outputs as the model unpacked."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from enginehouse.runtime.packed_linear import PackedLinear, pack_linear_layers, packing_available
from enginehouse.runtime.textgen.runner import TextGenerationRunner

pytestmark = pytest.mark.skipif(not packing_available(), reason="this torch build has no oneDNN linear")


def _plain_linears(model: nn.Module) -> int:
    return sum(1 for module in model.modules() if type(module) is nn.Linear)


def test_logits_equal_nn_linears_up_to_rounding(tiny_llama_dir: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir), dtype=torch.float32).eval()
    ids = torch.randint(0, 200, (3, 9))
    with torch.inference_mode():
        expected = model(ids).logits
        linears = _plain_linears(model)
        assert pack_linear_layers(model) == linears > 0
        got = model(ids).logits
    assert _plain_linears(model) == 0
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert torch.equal(got.argmax(-1), expected.argmax(-1))
    assert pack_linear_layers(model) == 0  # packed layers are not packed again


def test_a_shared_weight_is_kept_and_the_others_released() -> None:
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    model = LlamaForCausalLM(config).eval().requires_grad_(False)
    embedding = model.get_input_embeddings().weight
    ids = torch.randint(0, 64, (2, 5))
    expected = model(ids).logits
    pack_linear_layers(model)
    head = model.get_output_embeddings()
    assert isinstance(head, PackedLinear) and head.weight is embedding  # still tied to the embedding
    q_proj = model.model.layers[0].self_attn.q_proj
    assert isinstance(q_proj, PackedLinear) and q_proj.weight.numel() == 0
    assert q_proj.weight.dtype == torch.float32 and (q_proj.in_features, q_proj.out_features) == (32, 32)
    torch.testing.assert_close(model(ids).logits, expected, rtol=1e-4, atol=1e-4)


def test_only_float32_linears_are_packed() -> None:
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8).to(torch.bfloat16), nn.Embedding(4, 8))
    assert pack_linear_layers(model) == 1
    assert isinstance(model[0], PackedLinear) and type(model[1]) is nn.Linear and type(model[2]) is nn.Embedding


def test_a_replica_on_a_cpu_serves_with_packed_layers(tiny_llama_dir: Path) -> None:
    from enginehouse.runtime.options import parse_runtime_options

    runner = TextGenerationRunner(base_model=str(tiny_llama_dir), served_name="tiny",
                                  options=parse_runtime_options('{"max_loras": 2}'))
    runner.load()
    assert _plain_linears(runner.engine.model) == 0
    assert any(isinstance(module, PackedLinear) for module in runner.engine.model.modules())


@pytest.mark.parametrize("task", ["embedding", "ner"])
def test_encoder_replicas_pack_their_layers_and_keep_their_outputs(task: str, tmp_path: Path) -> None:
    from transformers import AutoModel, AutoModelForTokenClassification

    from enginehouse.demo.tiny_encoders import build_tiny_bert
    from enginehouse.runtime.embedding.model import open_embedding_model
    from enginehouse.runtime.ner.model import open_ner_model
    from enginehouse.runtime.options import RuntimeOptions

    if not packing_available():
        pytest.skip("this torch build cannot pack linear weights for oneDNN")
    if task == "embedding":
        source = build_tiny_bert(tmp_path / "bert")
        served, reference = open_embedding_model(str(source), RuntimeOptions()).model, AutoModel
    else:
        source = build_tiny_bert(tmp_path / "bert", head="token-classification",
                                 labels=["O", "B-PER", "I-PER"])
        served, reference = open_ner_model(str(source), RuntimeOptions()).model, AutoModelForTokenClassification
    assert served is not None and any(isinstance(module, PackedLinear) for module in served.modules())
    plain = reference.from_pretrained(str(source)).eval()
    ids = torch.randint(5, 100, (3, 11))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    with torch.inference_mode():
        got, expected = served(input_ids=ids, attention_mask=mask)[0], plain(input_ids=ids, attention_mask=mask)[0]
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
