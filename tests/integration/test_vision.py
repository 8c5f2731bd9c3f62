"""The image task types end to end: a real server and real replicas on tiny CLIP and DETR models
built here. One engine per task type, each answer checked against transformers run directly; a
fine-tune on clip-classification brings its own labels; bad images and wrong endpoints are 400s."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from enginehouse.demo.tiny_vision import build_tiny_clip, build_tiny_detr
from tests.integration.harness import ServerProcess, wait_deployments
from tests.integration.test_embedding_ner import (
    base_path,
    check_replacement,
    create_engine,
    deploy,
    register_job,
    wait_statuses,
)
from tests.unit.runtime.test_vision import (
    image_b64,
    ref_detections,
    ref_image,
    ref_text,
    ref_zero_shot,
)

LABELS = ["cat", "dog", "car"]


@pytest.fixture(scope="module")
def server(start_server) -> ServerProcess:  # type: ignore[no-untyped-def]
    return start_server()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("vision-models")
    return {
        "clip": build_tiny_clip(root / "clip"),
        "clip-labels": build_tiny_clip(root / "clip-labels", seed=1, labels=LABELS),
        "clip-ft": build_tiny_clip(root / "clip-ft", seed=2, labels=["red", "blue"]),
        "detr": build_tiny_detr(root / "detr"),
    }


def test_image_engines_answer_as_transformers_does(server: ServerProcess, models: dict[str, Path]) -> None:
    http = server.client()
    engines = {
        "clip-emb": create_engine(http, "clip-emb", "clip-embedding", models["clip"]),
        "zero-shot": create_engine(http, "zero-shot", "clip-classification", models["clip-labels"]),
        "detr": create_engine(http, "detr", "image-detection", models["detr"]),
    }
    job = register_job(http, "clip-classification", models["clip-labels"], [models["clip-ft"]])
    for engine in engines.values():
        wait_deployments(http, engine["id"])
    image = image_b64(seed=11, width=60, height=45)

    texts = ["a photo of a cat", "a red car"]
    text = http.post("/v1/embeddings", json={"model": "clip-emb", "input": texts})
    assert text.status_code == 200, text.text
    np.testing.assert_allclose([d["embedding"] for d in text.json()["data"]], ref_text(models["clip"], texts),
                               atol=1e-5)
    for kind in ("pooled", "patch-wise"):
        pooled = http.post("/v1/image-embeddings", json={"model": "clip-emb", "image": image, "type": kind})
        assert pooled.status_code == 200, pooled.text
        np.testing.assert_allclose(pooled.json()["data"][0]["embedding"],
                                   ref_image(models["clip"], image, kind == "patch-wise"), atol=1e-5)

    labels = ["a cat", "a dog"]
    zero = http.post("/v1/image-classification", json={"model": "zero-shot", "image": image, "labels": labels})
    assert zero.status_code == 200, zero.text
    np.testing.assert_allclose([d["score"] for d in zero.json()["data"]],
                               ref_zero_shot(models["clip-labels"], image, labels), atol=1e-5)

    found = http.post("/v1/detections", json={"model": "detr", "image": image, "threshold": 0.3})
    assert found.status_code == 200, found.text
    expected = ref_detections(models["detr"], image, 0.3)
    assert [(d["label"], round(d["score"], 4)) for d in found.json()["data"]] == \
        [(label, round(score, 4)) for label, score, _ in expected]
    np.testing.assert_allclose([d["box"] for d in found.json()["data"]], [box for *_, box in expected], atol=1e-3)

    # Errors: the gateway checks the body, the replica the image, the engine the endpoint.
    bad = http.post("/v1/detections", json={"model": "detr", "image": "bm90IGFuIGltYWdl"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "image"
    no_image = http.post("/v1/image-embeddings", json={"model": "clip-emb"})
    assert no_image.status_code == 400
    wrong = http.post("/v1/detections", json={"model": "clip-emb", "image": image})
    assert wrong.status_code == 400 and "/v1/image-embeddings" in wrong.json()["error"]["message"]

    # A fine-tune on clip-classification answers with its own labels; the base comes back after.
    deployed = deploy(http, engines["zero-shot"]["id"], "zero-shot-ft", job["id"], 1)
    assert deployed.status_code == 201, deployed.text
    assert deployed.json()["metadata"]["labels"] == ["red", "blue"]
    check_replacement(http, engines["zero-shot"], "zero-shot", "zero-shot-ft")
    tuned = http.post("/v1/image-classification", json={"model": "zero-shot-ft", "image": image}).json()
    assert [d["label"] for d in tuned["data"]] == ["red", "blue"]
    np.testing.assert_allclose([d["score"] for d in tuned["data"]],
                               ref_zero_shot(models["clip-ft"], image, ["red", "blue"]), atol=1e-5)
    assert http.post("/v1/image-classification", json={"model": "zero-shot", "image": image}).status_code == 409
    undeploy = http.post(f"/v1/engines/{engines['zero-shot']['id']}/undeploy",
                         json={"deployment_name": "zero-shot-ft"})
    assert undeploy.status_code == 202
    wait_statuses(http, engines["zero-shot"]["id"], {"zero-shot": "Deployed"})
    assert base_path(http, engines["zero-shot"]["id"], "zero-shot")[-1] == "Deployed"
    back = http.post("/v1/image-classification", json={"model": "zero-shot", "image": image}).json()
    assert [d["label"] for d in back["data"]] == LABELS
