"""vlm-generation and vlm-classification engines end to end: a real server and replicas on tiny
random checkpoints; chat with an image through the official openai client equals direct
transformers, and image classification through httpx equals the model's own logits."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from enginehouse.demo.tiny_vlm import build_tiny_image_classifier, build_tiny_llava
from tests.integration.harness import ServerProcess, wait_deployments
from tests.integration.test_embedding_ner import create_engine
from tests.unit.runtime.test_vlm import BLUE, RED, chat_messages, direct_logits, reference_generate


@pytest.fixture(scope="module")
def server(start_server) -> ServerProcess:  # type: ignore[no-untyped-def]
    return start_server()


def test_vlm_chat_through_the_openai_client(server: ServerProcess, tmp_path: Path) -> None:
    http = server.client()
    base = build_tiny_llava(tmp_path / "llava")
    engine = create_engine(http, "llava", "vlm-generation", base)
    wait_deployments(http, engine["id"])
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=server.api_key, max_retries=0)
    question = "Describe the picture."
    reply = client.chat.completions.create(model="llava", messages=chat_messages(RED, question),  # type: ignore[arg-type]
                                           temperature=0, max_tokens=10, extra_body={"ignore_eos": True})
    expected = reference_generate(base, RED, question, 10)
    assert reply.choices[0].message.content == expected
    assert reply.usage is not None and reply.usage.completion_tokens == 10
    stream = client.chat.completions.create(model="llava", messages=chat_messages(RED, question),  # type: ignore[arg-type]
                                            temperature=0, max_tokens=10, stream=True,
                                            extra_body={"ignore_eos": True})
    assert "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices) == expected
    bad = http.post("/v1/chat/completions", json={"model": "llava", "messages": chat_messages("data:,nope")})
    assert bad.status_code == 400, bad.text
    wrong = http.post("/v1/classification", json={"model": "llava", "image": RED})
    assert wrong.status_code == 400 and "/v1/chat/completions" in wrong.json()["error"]["message"]


def test_vlm_classification_through_httpx(server: ServerProcess, tmp_path: Path) -> None:
    http = server.client()
    base = build_tiny_image_classifier(tmp_path / "vit")
    engine = create_engine(http, "vit", "vlm-classification", base)
    wait_deployments(http, engine["id"])
    response = http.post("/v1/classification", json={"model": "vit", "image": BLUE})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "classification" and body["model"] == "vit"
    logits = body["data"][0]["logits"]
    assert list(logits) == ["cat", "dog", "bird"]
    assert list(logits.values()) == pytest.approx(direct_logits(base, BLUE), abs=1e-5)
    assert http.post("/v1/classification", json={"model": "vit", "image": "bm90IGFuIGltYWdl"}).status_code == 400
    assert http.post("/v1/classification", json={"model": "vit"}).status_code == 400
