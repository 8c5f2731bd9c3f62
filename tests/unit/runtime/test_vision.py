"""The image task types in-process (clip-embedding, clip-classification, image-detection): every
endpoint against the same model run directly with transformers, and fine-tune swaps."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from transformers import AutoImageProcessor, AutoModel, AutoModelForObjectDetection, AutoTokenizer

from enginehouse.demo.tiny_vision import build_tiny_clip, build_tiny_detr
from enginehouse.runtime.options import RuntimeOptions
from enginehouse.runtime.server import create_app
from enginehouse.runtime.vision.runner import ClipClassificationRunner, ClipEmbeddingRunner, DetectionRunner
from tests.unit.runtime.test_images import png_bytes

CHECKPOINT_LABELS = ["cat", "dog", "car"]


def image_b64(seed: int = 0, width: int = 50, height: int = 40) -> str:
    return base64.b64encode(png_bytes(width, height, seed)).decode()


def pil(value: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(value))).convert("RGB")


# -- direct transformers references (also used by the integration tests) ----------------------

def ref_text(model_dir: Path, texts: list[str]) -> np.ndarray:
    model = AutoModel.from_pretrained(str(model_dir)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    with torch.no_grad():
        return np.stack([model.get_text_features(**tokenizer(t, return_tensors="pt")).pooler_output[0].numpy()
                         for t in texts])


def ref_image(model_dir: Path, image: str, patch_wise: bool = False) -> np.ndarray:
    model = AutoModel.from_pretrained(str(model_dir)).eval()
    pixels = AutoImageProcessor.from_pretrained(str(model_dir))(images=pil(image), return_tensors="pt")
    with torch.no_grad():
        if patch_wise:
            return model.vision_model(**pixels).last_hidden_state[0, 1:].numpy()
        return model.get_image_features(**pixels).pooler_output[0].numpy()


def ref_zero_shot(model_dir: Path, image: str, labels: list[str]) -> list[float]:
    model = AutoModel.from_pretrained(str(model_dir)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    pixels = AutoImageProcessor.from_pretrained(str(model_dir))(images=pil(image), return_tensors="pt")
    with torch.no_grad():
        out = model(**tokenizer(labels, padding=True, return_tensors="pt"), **pixels)
    return out.logits_per_image[0].softmax(-1).tolist()


def ref_detections(model_dir: Path, image: str, threshold: float) -> list[tuple[str, float, list[float]]]:
    model = AutoModelForObjectDetection.from_pretrained(str(model_dir)).eval()
    processor = AutoImageProcessor.from_pretrained(str(model_dir))
    img = pil(image)
    with torch.no_grad():
        out = model(**processor(images=img, return_tensors="pt"))
    found = processor.post_process_object_detection(out, threshold=threshold, target_sizes=[(img.height, img.width)])[0]
    rows = [(model.config.id2label[int(l)], float(s), [float(x) for x in b])
            for s, l, b in zip(found["scores"], found["labels"], found["boxes"])]
    return sorted(rows, key=lambda r: r[1], reverse=True)


# -- fixtures -----------------------------------------------------------------------------

@pytest.fixture(scope="session")
def vision_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("vision")
    return {
        "clip": build_tiny_clip(root / "clip"),
        "clip-labels": build_tiny_clip(root / "clip-labels", seed=1, labels=CHECKPOINT_LABELS),
        "clip-ft": build_tiny_clip(root / "clip-ft", seed=2, labels=["red", "blue"]),
        "detr": build_tiny_detr(root / "detr"),
        "detr-ft": build_tiny_detr(root / "detr-ft", seed=3, labels=("apple", "pear", "plum")),
    }


def _client(runner_class: type, model_dir: Path) -> Iterator[TestClient]:
    runner = runner_class(base_model=str(model_dir), served_name="base", options=RuntimeOptions())
    runner.load()
    with TestClient(create_app(runner)) as client:
        yield client


@pytest.fixture
def clip_client(vision_dirs: dict[str, Path]) -> Iterator[TestClient]:
    yield from _client(ClipEmbeddingRunner, vision_dirs["clip"])


@pytest.fixture
def zero_shot_client(vision_dirs: dict[str, Path]) -> Iterator[TestClient]:
    yield from _client(ClipClassificationRunner, vision_dirs["clip-labels"])


@pytest.fixture
def detr_client(vision_dirs: dict[str, Path]) -> Iterator[TestClient]:
    yield from _client(DetectionRunner, vision_dirs["detr"])


# -- clip-embedding -------------------------------------------------------------------------

def test_text_embeddings_match_transformers(clip_client: TestClient, vision_dirs: dict[str, Path]) -> None:
    texts = ["a photo of a cat", "dog", "the engine serves requests quickly"]
    response = clip_client.post("/v1/embeddings", json={"model": "base", "input": texts})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "list" and body["usage"]["prompt_tokens"] > 0
    got = np.array([d["embedding"] for d in body["data"]])
    assert got.shape == (3, 16)
    np.testing.assert_allclose(got, ref_text(vision_dirs["clip"], texts), atol=1e-5)


@pytest.mark.parametrize("kind", ["pooled", "patch-wise"])
def test_image_embeddings_match_transformers(clip_client: TestClient, vision_dirs: dict[str, Path], kind: str) -> None:
    image = image_b64(seed=4)
    response = clip_client.post("/v1/image-embeddings", json={"model": "base", "image": image, "type": kind})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["type"] == kind and body["usage"]["images"] == 1 and body["data"][0]["object"] == "embedding"
    got = np.array(body["data"][0]["embedding"])
    # 32×32 pixels in patches of 8: 16 patches of the vision tower's 32 hidden dimensions.
    assert got.shape == ((16, 32) if kind == "patch-wise" else (16,))
    np.testing.assert_allclose(got, ref_image(vision_dirs["clip"], image, kind == "patch-wise"), atol=1e-5)


def test_image_endpoint_errors(clip_client: TestClient) -> None:
    bad = clip_client.post("/v1/image-embeddings", json={"model": "base", "image": "bm90IGFuIGltYWdl"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "image"
    url = clip_client.post("/v1/image-embeddings", json={"model": "base", "image": "https://x.org/a.png"})
    assert url.status_code == 400 and url.json()["error"]["code"] == "image_url_not_supported"
    local = clip_client.post("/v1/image-embeddings", json={"model": "base", "image": "file:///etc/hostname"})
    assert local.status_code == 400 and local.json()["error"]["code"] == "local_files_not_allowed"
    kind = clip_client.post("/v1/image-embeddings", json={"model": "base", "image": image_b64(), "type": "mean"})
    assert kind.status_code == 400
    wrong = clip_client.post("/v1/detections", json={"model": "base", "image": image_b64()})
    assert wrong.status_code in (404, 405)


def test_health_reports_image_load(detr_client: TestClient) -> None:
    health = detr_client.get("/health").json()
    assert health["image_running"] == 0 and health["image_waiting"] == 0 and health["labels"] == ["cat", "dog", "car"]


def test_local_files_when_the_setting_allows(vision_dirs: dict[str, Path], tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENGINEHOUSE_ALLOW_LOCAL_FILES", "true")
    path = tmp_path / "img.png"
    image = image_b64(seed=5)
    path.write_bytes(base64.b64decode(image))
    for client in _client(ClipEmbeddingRunner, vision_dirs["clip"]):
        response = client.post("/v1/image-embeddings", json={"model": "base", "image": path.as_uri()})
        assert response.status_code == 200, response.text
        np.testing.assert_allclose(response.json()["data"][0]["embedding"], ref_image(vision_dirs["clip"], image),
                                   atol=1e-5)


# -- clip-classification --------------------------------------------------------------------

def test_zero_shot_with_request_labels(zero_shot_client: TestClient, vision_dirs: dict[str, Path]) -> None:
    image, labels = image_b64(seed=6), ["a cat", "a dog on a mat", "an engine"]
    response = zero_shot_client.post("/v1/image-classification",
                                     json={"model": "base", "image": image, "labels": labels})
    assert response.status_code == 200, response.text
    body = response.json()
    scores = [d["score"] for d in body["data"]]
    assert [d["label"] for d in body["data"]] == labels and body["usage"]["images"] == 1
    np.testing.assert_allclose(scores, ref_zero_shot(vision_dirs["clip-labels"], image, labels), atol=1e-5)
    assert body["label"] == labels[int(np.argmax(scores))]


def test_zero_shot_with_checkpoint_labels(zero_shot_client: TestClient, vision_dirs: dict[str, Path]) -> None:
    image = image_b64(seed=7)
    body = zero_shot_client.post("/v1/image-classification", json={"model": "base", "image": image}).json()
    assert [d["label"] for d in body["data"]] == CHECKPOINT_LABELS
    np.testing.assert_allclose([d["score"] for d in body["data"]],
                               ref_zero_shot(vision_dirs["clip-labels"], image, CHECKPOINT_LABELS), atol=1e-5)
    assert zero_shot_client.get("/health").json()["labels"] == CHECKPOINT_LABELS


def test_zero_shot_without_any_labels_is_a_400(vision_dirs: dict[str, Path]) -> None:
    for client in _client(ClipClassificationRunner, vision_dirs["clip"]):
        response = client.post("/v1/image-classification", json={"model": "base", "image": image_b64()})
        assert response.status_code == 400 and "labels" in response.json()["error"]["message"]
        empty = client.post("/v1/image-classification", json={"model": "base", "image": image_b64(), "labels": []})
        assert empty.status_code == 400


# -- image-detection ------------------------------------------------------------------------

def test_detections_match_transformers_and_threshold_filters(detr_client: TestClient,
                                                             vision_dirs: dict[str, Path]) -> None:
    image = image_b64(seed=8, width=64, height=48)
    everything = detr_client.post("/v1/detections", json={"model": "base", "image": image, "threshold": 0.0}).json()
    expected = ref_detections(vision_dirs["detr"], image, 0.0)
    assert len(everything["data"]) == len(expected) == 8
    for got, (label, score, box) in zip(everything["data"], expected):
        assert got["object"] == "detection" and got["label"] == label
        assert got["score"] == pytest.approx(score, abs=1e-5)
        np.testing.assert_allclose(got["box"], box, atol=1e-3)
    scores = sorted(d["score"] for d in everything["data"])
    cut = (scores[3] + scores[4]) / 2  # between two scores: half the boxes stay
    kept = detr_client.post("/v1/detections", json={"model": "base", "image": image, "threshold": cut}).json()["data"]
    assert len(kept) == 4 and all(d["score"] > cut for d in kept)
    too_high = detr_client.post("/v1/detections", json={"model": "base", "image": image, "threshold": 1.5})
    assert too_high.status_code == 400 and too_high.json()["error"]["param"] == "threshold"


# -- fine-tune swaps ------------------------------------------------------------------------

def test_clip_fine_tune_swaps_labels_in_and_out(zero_shot_client: TestClient, vision_dirs: dict[str, Path]) -> None:
    image = image_b64(seed=9)
    loaded = zero_shot_client.put("/v1/adapters/ft", json={"path": str(vision_dirs["clip-ft"])})
    assert loaded.status_code == 200, loaded.text
    health = zero_shot_client.get("/health").json()
    assert health["base_served"] is False and health["labels"] == ["red", "blue"]
    body = zero_shot_client.post("/v1/image-classification", json={"model": "ft", "image": image}).json()
    np.testing.assert_allclose([d["score"] for d in body["data"]],
                               ref_zero_shot(vision_dirs["clip-ft"], image, ["red", "blue"]), atol=1e-5)
    replaced = zero_shot_client.post("/v1/image-classification", json={"model": "base", "image": image})
    assert replaced.status_code == 409
    assert zero_shot_client.delete("/v1/adapters/ft").status_code == 200
    back = zero_shot_client.post("/v1/image-classification", json={"model": "base", "image": image}).json()
    assert [d["label"] for d in back["data"]] == CHECKPOINT_LABELS


def test_fine_tunes_that_do_not_fit_are_422_and_the_base_keeps_serving(
        detr_client: TestClient, vision_dirs: dict[str, Path], tmp_path: Path) -> None:
    clip_in_detr = detr_client.put("/v1/adapters/ft", json={"path": str(vision_dirs["clip"])})
    assert clip_in_detr.status_code == 422 and "clip" in clip_in_detr.json()["error"]["message"]
    missing = detr_client.put("/v1/adapters/ft", json={"path": str(tmp_path / "nope")})
    assert missing.status_code == 422
    image = image_b64(seed=10)
    assert detr_client.post("/v1/detections", json={"model": "base", "image": image}).status_code == 200
    assert detr_client.put("/v1/adapters/ft", json={"path": str(vision_dirs["detr-ft"])}).status_code == 200
    found = detr_client.post("/v1/detections", json={"model": "ft", "image": image, "threshold": 0.0}).json()["data"]
    assert {d["label"] for d in found} <= {"apple", "pear", "plum"}
    expected = ref_detections(vision_dirs["detr-ft"], image, 0.0)
    assert [d["score"] for d in found] == pytest.approx([score for _, score, _ in expected], abs=1e-5)
    assert detr_client.post("/v1/detections", json={"model": "base", "image": image}).status_code == 409
    assert detr_client.delete("/v1/adapters/ft").status_code == 200
    assert detr_client.get("/health").json()["base_served"] is True


def test_concurrent_image_requests_each_get_their_own_answer(clip_client: TestClient,
                                                             vision_dirs: dict[str, Path]) -> None:
    images = [image_b64(seed=20 + i, width=30 + i, height=33) for i in range(6)]

    def call(image: str) -> list[float]:
        response = clip_client.post("/v1/image-embeddings", json={"model": "base", "image": image})
        assert response.status_code == 200, response.text
        return response.json()["data"][0]["embedding"]

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(call, images))
    for image, answer in zip(images, answers):
        np.testing.assert_allclose(answer, ref_image(vision_dirs["clip"], image), atol=1e-5)
