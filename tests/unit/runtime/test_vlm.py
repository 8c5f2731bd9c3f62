"""vlm-generation and vlm-classification replicas in-process over tiny random checkpoints:
answers equal direct transformers calls, streams join to the same text, bad images are 400s,
and a fine-tune swaps in and out."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForImageClassification, AutoModelForImageTextToText, AutoProcessor

from enginehouse.demo.tiny_vlm import build_tiny_image_classifier, build_tiny_llava
from enginehouse.runtime.options import RuntimeOptions
from enginehouse.runtime.server import create_app
from enginehouse.runtime.vlm.runner import VlmClassificationRunner, VlmGenerationRunner
from tests.integration.harness import wait_for
from tests.prometheus import Scrape


def png_data_uri(color: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> str:
    buffer = io.BytesIO()
    image = Image.new("RGB", size, color)
    image.putpixel((3, 4), (0, 0, 0))  # not uniform, so images differ beyond their mean
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


RED = png_data_uri((200, 20, 20))
BLUE = png_data_uri((10, 30, 220))


def chat_messages(image: str, text: str = "What is in this picture?") -> list[dict]:
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": image}},
                                         {"type": "text", "text": text}]}]


def reference_generate(model_dir: Path, image: str, text: str, max_new_tokens: int) -> str:
    """Direct transformers: the processor on the same prompt and image, then ``generate``."""
    processor = AutoProcessor.from_pretrained(str(model_dir))
    model = AutoModelForImageTextToText.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
    prompt = processor.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    picture = Image.open(io.BytesIO(base64.b64decode(image.split(",", 1)[1]))).convert("RGB")
    inputs = processor(images=[picture], text=prompt, return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


@pytest.fixture(scope="module")
def vlm_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("vlm")
    return {"base": build_tiny_llava(root / "base", seed=0), "ft": build_tiny_llava(root / "ft", seed=1)}


@pytest.fixture(scope="module")
def chat_client(vlm_dirs: dict[str, Path]) -> Iterator[TestClient]:
    runner = VlmGenerationRunner(base_model=str(vlm_dirs["base"]), served_name="vlm", options=RuntimeOptions())
    runner.load()
    with TestClient(create_app(runner)) as client:
        yield client


@pytest.fixture(scope="module")
def cls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_image_classifier(tmp_path_factory.mktemp("vit") / "base")


@pytest.fixture(scope="module")
def cls_client(cls_dir: Path) -> Iterator[TestClient]:
    runner = VlmClassificationRunner(base_model=str(cls_dir), served_name="vit", options=RuntimeOptions())
    runner.load()
    with TestClient(create_app(runner)) as client:
        yield client


def chat(client: TestClient, model: str = "vlm", **extra: object) -> dict:
    body = {"model": model, "messages": chat_messages(RED), "temperature": 0, "max_tokens": 12, **extra}
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_greedy_chat_equals_direct_generate(chat_client: TestClient, vlm_dirs: dict[str, Path]) -> None:
    answer = chat(chat_client, ignore_eos=True)
    expected = reference_generate(vlm_dirs["base"], RED, "What is in this picture?", 12)
    assert answer["choices"][0]["message"]["content"] == expected and expected
    assert answer["object"] == "chat.completion" and answer["model"] == "vlm"
    assert answer["usage"]["completion_tokens"] == 12 and answer["choices"][0]["finish_reason"] == "length"
    # The image counts in the prompt: 16 patch tokens stand for it.
    assert answer["usage"]["prompt_tokens"] > 16


def test_the_image_matters(chat_client: TestClient) -> None:
    red = chat(chat_client, ignore_eos=True)["choices"][0]["message"]["content"]
    blue = chat(chat_client, ignore_eos=True, messages=chat_messages(BLUE))["choices"][0]["message"]["content"]
    assert red != blue


def test_stream_joins_to_the_same_text(chat_client: TestClient) -> None:
    whole = chat(chat_client, ignore_eos=True)["choices"][0]["message"]["content"]
    body = {"model": "vlm", "messages": chat_messages(RED), "temperature": 0, "max_tokens": 12, "ignore_eos": True,
            "stream": True, "stream_options": {"include_usage": True}}
    with chat_client.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == whole
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "length"
    assert chunks[-1]["usage"]["completion_tokens"] == 12


def test_stop_and_seed(chat_client: TestClient) -> None:
    whole = chat(chat_client, ignore_eos=True)["choices"][0]["message"]["content"]
    stop = whole[3:6]
    cut = chat(chat_client, ignore_eos=True, stop=[stop])["choices"][0]
    assert cut["message"]["content"] == whole[: whole.find(stop)] and cut["finish_reason"] == "stop"
    sampled = [chat(chat_client, temperature=1.0, seed=7, ignore_eos=True)["choices"][0]["message"]["content"]
               for _ in range(2)]
    assert sampled[0] == sampled[1]


def test_penalties_and_bias_apply_and_the_rest_is_refused_by_name(chat_client: TestClient) -> None:
    whole = chat(chat_client, ignore_eos=True, max_tokens=16)["choices"][0]["message"]["content"]
    penalised = chat(chat_client, ignore_eos=True, max_tokens=16, frequency_penalty=2.0, repetition_penalty=1.5,
                     logit_bias={"5": 50})["choices"][0]["message"]["content"]
    assert penalised != whole
    for extra, param in [({"n": 2}, "n"), ({"logprobs": True}, "logprobs"),
                         ({"response_format": {"type": "json_object"}}, "response_format"),
                         ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools")]:
        body = {"model": "vlm", "messages": chat_messages(RED), "max_tokens": 4, **extra}
        response = chat_client.post("/v1/chat/completions", json=body)
        assert response.status_code == 400 and response.json()["error"]["param"] == param


@pytest.mark.parametrize("url", ["data:image/png;base64,AAAA", "not base64 at all!", "http://example.com/x.png",
                                 "file:///etc/hostname"])
def test_bad_image_is_400(chat_client: TestClient, url: str) -> None:
    body = {"model": "vlm", "messages": chat_messages(url), "max_tokens": 2}
    response = chat_client.post("/v1/chat/completions", json=body)
    assert response.status_code == 400, response.text


def test_text_only_chat_works_too(chat_client: TestClient) -> None:
    body = {"model": "vlm", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "temperature": 0}
    assert chat_client.post("/v1/chat/completions", json=body).status_code == 200


def test_swap_a_fine_tune_in_and_out(chat_client: TestClient, vlm_dirs: dict[str, Path]) -> None:
    base = chat(chat_client, ignore_eos=True)["choices"][0]["message"]["content"]
    response = chat_client.put("/v1/adapters/ft", json={"path": str(vlm_dirs["ft"])})
    assert response.status_code == 200, response.text
    health = chat_client.get("/health").json()
    assert health["base_served"] is False and health["served_name"] == "vlm" and "ft" in health["adapters"]
    assert chat_client.post("/v1/chat/completions", json={"model": "vlm", "messages": chat_messages(RED)}
                            ).status_code == 409
    tuned = chat(chat_client, model="ft", ignore_eos=True)["choices"][0]["message"]["content"]
    assert tuned == reference_generate(vlm_dirs["ft"], RED, "What is in this picture?", 12) and tuned != base
    assert chat_client.delete("/v1/adapters/ft").status_code == 200
    assert chat_client.get("/health").json()["base_served"] is True
    assert chat(chat_client, ignore_eos=True)["choices"][0]["message"]["content"] == base


def test_a_fine_tune_that_does_not_fit_is_422(chat_client: TestClient, cls_dir: Path, tmp_path: Path) -> None:
    response = chat_client.put("/v1/adapters/wrong", json={"path": str(cls_dir)})
    assert response.status_code == 422 and "vit" in response.text
    assert chat_client.delete("/v1/adapters/wrong").status_code == 200


# -- vlm-classification ------------------------------------------------------------------------


def direct_logits(model_dir: Path, image: str) -> list[float]:
    processor = AutoImageProcessor.from_pretrained(str(model_dir))
    model = AutoModelForImageClassification.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    picture = Image.open(io.BytesIO(base64.b64decode(image.split(",", 1)[1]))).convert("RGB")
    with torch.inference_mode():
        return model(**processor(images=[picture], return_tensors="pt")).logits[0].tolist()


def test_classification_logits_equal_direct(cls_client: TestClient, cls_dir: Path) -> None:
    response = cls_client.post("/v1/classification", json={"model": "vit", "image": BLUE})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "classification" and body["id"].startswith("classify-")
    logits = body["data"][0]["logits"]
    assert list(logits) == ["cat", "dog", "bird"] and "probs" not in body["data"][0]
    assert list(logits.values()) == pytest.approx(direct_logits(cls_dir, BLUE), abs=1e-5)
    # Bare base64 works as well as a data: URI.
    bare = cls_client.post("/v1/classification", json={"model": "vit", "image": BLUE.split(",", 1)[1]})
    assert bare.json()["data"][0]["logits"] == logits
    probs = cls_client.post("/v1/classification", json={"model": "vit", "image": BLUE, "data_format": "probs"})
    assert sum(probs.json()["data"][0]["probs"].values()) == pytest.approx(1.0)


@pytest.mark.parametrize(("body", "param"), [
    ({"image": "Zm9vYmFy"}, "image"),  # base64 of "foobar": not an image
    ({"image": "data:image/png;base64,@@@"}, "image"),
    ({}, None),  # neither input nor image
    ({"input": "a cat"}, "image"),
    ({"image": RED, "input": "a cat"}, "input"),
])
def test_classification_bad_requests_are_400(cls_client: TestClient, body: dict, param: str | None) -> None:
    response = cls_client.post("/v1/classification", json={"model": "vit", **body})
    assert response.status_code == 400, response.text
    if param is not None:
        assert response.json()["error"]["param"] == param


def test_classification_swap(cls_client: TestClient, tmp_path: Path) -> None:
    ft = build_tiny_image_classifier(tmp_path / "ft", labels=("yes", "no"), seed=3)
    assert cls_client.put("/v1/adapters/ft", json={"path": str(ft)}).status_code == 200
    answer = cls_client.post("/v1/classification", json={"model": "ft", "image": RED}).json()
    assert list(answer["data"][0]["logits"]) == ["yes", "no"]
    assert cls_client.delete("/v1/adapters/ft").status_code == 200
    assert cls_client.get("/health").json()["labels"] == ["cat", "dog", "bird"]


def _leave_after_the_body(client: TestClient, body: dict) -> None:
    """Send ``body`` to the replica app as a client that disconnects as soon as it is sent."""
    raw = json.dumps(body).encode()
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
             "query_string": b"", "root_path": "", "headers": [(b"content-type", b"application/json")],
             "server": ("testserver", 80), "client": ("testclient", 50000)}

    async def call() -> None:
        messages = [{"type": "http.disconnect"}, {"type": "http.request", "body": raw, "more_body": False}]

        async def receive() -> dict:
            return messages.pop() if len(messages) > 1 else messages[0]

        async def send(message: dict) -> None:
            pass

        await client.app(scope, receive, send)

    client.portal.call(call)  # type: ignore[union-attr]


@pytest.mark.parametrize("stream", [False, True])
def test_a_generation_stops_when_its_client_leaves(chat_client: TestClient, stream: bool) -> None:
    def scrape() -> Scrape:
        return Scrape.parse(chat_client.get("/metrics").text)

    before = scrape()
    max_tokens = 400
    body = {"model": "vlm", "messages": chat_messages(RED), "max_tokens": max_tokens, "ignore_eos": True,
            "temperature": 0, "stream": stream}
    _leave_after_the_body(chat_client, body)
    wait_for(lambda: scrape().delta(before, "enginehouse_requests_total", status="aborted") == 1,
             timeout=60, what="the generation to be counted as aborted")
    after = scrape()
    assert after.delta(before, "enginehouse_requests_total", status="ok") == 0
    assert after.delta(before, "enginehouse_generation_tokens_total") < max_tokens
    # The replica serves the next caller in full.
    assert chat(chat_client, ignore_eos=True)["usage"]["completion_tokens"] == 12
    assert scrape().delta(before, "enginehouse_requests_total", status="ok") == 1


def test_a_huge_prompt_is_refused_before_the_processor_reads_it(chat_client: TestClient) -> None:
    huge = ("the quick brown fox jumps over the lazy dog. " * 230_000)[:10_000_000]
    body = {"model": "vlm", "messages": chat_messages(RED, huge), "max_tokens": 2}
    response = chat_client.post("/v1/chat/completions", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "context_length_exceeded" and "at least" in error["message"]
    assert chat(chat_client)["usage"]["completion_tokens"] > 0
