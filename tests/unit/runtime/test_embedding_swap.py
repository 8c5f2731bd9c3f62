"""A fine-tune in place of the base model (SPEC §4.3) on an embedding replica, driven through the
adapter endpoints exactly as the reconciler drives them."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from enginehouse.demo.tiny_encoders import build_tiny_bert
from enginehouse.runtime.embedding.runner import EmbeddingRunner
from enginehouse.runtime.options import RuntimeOptions
from enginehouse.runtime.server import create_app
from tests.unit.runtime.test_embedding import TEXTS, embed, reference, with_recipe


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("swap")
    base = with_recipe(build_tiny_bert(root / "raw"), root / "base", {"pooling_mode": "mean"}, normalize=True)
    return {
        "base": base,
        # A fine-tune saved with save_pretrained only: no sentence-transformers files, no tokenizer.
        "ft": _without_tokenizer(build_tiny_bert(root / "ft", seed=1)),
        "ft2": build_tiny_bert(root / "ft2", seed=2),
        "token-classification": build_tiny_bert(root / "tc", head="token-classification", labels=["O", "B-X"]),
    }


def _without_tokenizer(path: Path) -> Path:
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (path / name).unlink(missing_ok=True)
    return path


@pytest.fixture
def client(dirs: dict[str, Path], tmp_path: Path) -> Iterator[TestClient]:
    # A copy of the base, so a test may take it away from under the replica.
    base = shutil.copytree(dirs["base"], tmp_path / "base")
    runner = EmbeddingRunner(base_model=str(base), served_name="base", options=RuntimeOptions())
    runner.load()
    with TestClient(create_app(runner)) as test_client:
        yield test_client


def _put(client: TestClient, name: str, path: Path | str) -> dict:
    response = client.put(f"/v1/adapters/{name}", json={"path": str(path)})
    return {**response.json(), "http": response.status_code}


def test_fine_tune_replaces_the_base_model_and_goes_back(client: TestClient, dirs: dict[str, Path]) -> None:
    base_answer = embed(client, TEXTS, model="base")
    loaded = _put(client, "ft", dirs["ft"])
    assert loaded["http"] == 200 and loaded["name"] == "ft" and loaded["path"] == str(dirs["ft"])

    health = client.get("/health").json()
    assert health["base_served"] is False and health["serving"] == "ft" and health["served_name"] == "base"
    assert health["adapters"] == {"ft": {"status": "loaded", "path": str(dirs["ft"]), "reason": None}}
    # Without recipe files the fine-tune keeps its base model's pooling and normalisation, and
    # without a tokenizer it uses the base model's.
    got = embed(client, TEXTS, model="ft")
    np.testing.assert_allclose(got, reference_ft(dirs, TEXTS), atol=1e-5)
    assert not np.allclose(got, base_answer, atol=1e-3)

    replaced = client.post("/v1/embeddings", json={"model": "base", "input": "x"})
    assert replaced.status_code == 409 and replaced.json()["error"]["code"] == "base_replaced"
    assert "'ft'" in replaced.json()["error"]["message"]
    assert [(m["id"], m["parent"]) for m in client.get("/v1/models").json()["data"]] == [("ft", "base")]

    assert client.delete("/v1/adapters/ft").status_code == 200
    health = client.get("/health").json()
    assert health["base_served"] is True and health["adapters"] == {} and health["serving"] == "base"
    np.testing.assert_allclose(embed(client, TEXTS, model="base"), base_answer, atol=1e-6)
    gone = client.post("/v1/embeddings", json={"model": "ft", "input": "x"})
    assert gone.status_code == 404
    assert client.delete("/v1/adapters/ft").status_code == 404


def reference_ft(dirs: dict[str, Path], texts: list[str]) -> np.ndarray:
    # The fine-tune has no tokenizer of its own: compute with a copy that has the base's.
    work = dirs["ft"].parent / "ft-with-tokenizer"
    if not work.exists():
        shutil.copytree(dirs["ft"], work)
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(dirs["base"] / name, work / name)
    return reference(work, texts, ["mean"], True)


def test_one_fine_tune_at_a_time(client: TestClient, dirs: dict[str, Path]) -> None:
    assert _put(client, "ft", dirs["ft"])["http"] == 200
    assert _put(client, "ft", dirs["ft"])["http"] == 200  # the same again: nothing to do
    second = _put(client, "ft2", dirs["ft2"])
    assert second["http"] == 409 and second["error"]["code"] == "fine_tune_already_loaded"
    assert "remove 'ft'" in second["error"]["message"]
    # The same name re-pointed to new files is a swap to them.
    assert _put(client, "ft", dirs["ft2"])["http"] == 200
    assert client.get("/health").json()["adapters"]["ft"]["path"] == str(dirs["ft2"])
    np.testing.assert_allclose(embed(client, TEXTS, model="ft"), reference(dirs["ft2"], TEXTS, ["mean"], True),
                               atol=1e-5)
    assert _put(client, "base", dirs["ft"])["http"] == 409


def _make_lora_dir(path: Path) -> Path:
    path.mkdir()
    (path / "adapter_config.json").write_text('{"peft_type": "LORA"}')
    return path


def _make_corrupt(source: Path, path: Path) -> Path:
    shutil.copytree(source, path)
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    return path


def _make_empty(path: Path) -> Path:
    path.mkdir()
    return path


@pytest.mark.parametrize(("make", "fragment"), [
    (lambda d, t: t / "missing", "does not exist"),
    (lambda d, t: _make_empty(t / "empty"), "not a model directory (no config.json)"),
    (lambda d, t: _make_lora_dir(t / "lora"), "holds a LoRA adapter"),
    (lambda d, t: d["token-classification"], "BertForTokenClassification checkpoint"),
    (lambda d, t: _make_corrupt(d["ft2"], t / "corrupt"), "could not load the weights"),
])
def test_a_fine_tune_that_does_not_fit_is_422_and_the_base_keeps_serving(
    client: TestClient, dirs: dict[str, Path], tmp_path: Path, make, fragment: str  # type: ignore[no-untyped-def]
) -> None:
    path = make(dirs, tmp_path)
    refused = _put(client, "bad", path)
    assert refused["http"] == 422, refused
    assert refused["error"]["code"] == "model_load_failed" and fragment in refused["error"]["message"]
    health = client.get("/health").json()
    assert health["base_served"] is True
    assert health["adapters"]["bad"]["status"] == "failed" and fragment in health["adapters"]["bad"]["reason"]
    assert client.post("/v1/embeddings", json={"model": "base", "input": "x"}).status_code == 200
    assert client.delete("/v1/adapters/bad").status_code == 200  # forgets the failure
    assert client.get("/health").json()["adapters"] == {}


def test_a_model_of_another_kind_is_a_wrong_base_model(client: TestClient, tiny_llama_dir: Path) -> None:
    refused = _put(client, "llama", tiny_llama_dir)
    assert refused["http"] == 422
    assert "is a llama model but this engine's base model is a bert model" in refused["error"]["message"]


def test_requests_holding_the_old_model_finish_on_it(dirs: dict[str, Path]) -> None:
    runner = EmbeddingRunner(base_model=str(dirs["base"]), served_name="base", options=RuntimeOptions())
    runner.load()
    runner.start()
    try:
        before = runner.slot.resolve("base")  # what a request resolved just before the swap
        runner.load_adapter("ft", str(dirs["ft2"]))
        rows = [before.model.tokenizer(TEXTS[0]).input_ids]
        old = asyncio.run(runner.worker.run(before.model, rows, "base"))[0].numpy()
    finally:
        runner.stop()
    np.testing.assert_allclose(old, reference(dirs["base"], TEXTS[:1], ["mean"], True)[0], atol=1e-5)


def test_base_that_cannot_be_reread_keeps_the_fine_tune_serving(client: TestClient, dirs: dict[str, Path],
                                                                 tmp_path: Path) -> None:
    assert _put(client, "ft", dirs["ft2"])["http"] == 200
    shutil.rmtree(tmp_path / "base")
    refused = client.delete("/v1/adapters/ft")
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "base_reload_failed"
    assert client.get("/health").json()["adapters"]["ft"]["status"] == "loaded"
    assert client.post("/v1/embeddings", json={"model": "ft", "input": "x"}).status_code == 200
