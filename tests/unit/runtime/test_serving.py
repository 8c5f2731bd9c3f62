"""The replica's HTTP API in-process (FastAPI TestClient, engine thread running)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from enginehouse.runtime.options import RuntimeOptions
from enginehouse.runtime.server import create_app
from enginehouse.runtime.textgen.runner import TextGenerationRunner
from tests.integration.harness import wait_for
from tests.prometheus import Scrape
from tests.unit.runtime.support import PROMPTS

Reference = Callable[[Path | None, str, int], list[int]]


def _runner(base_dir: Path, **options: Any) -> TextGenerationRunner:
    runner = TextGenerationRunner(base_model=str(base_dir), served_name="tiny", options=RuntimeOptions(**options))
    runner.load()
    return runner


@pytest.fixture(scope="module")
def client(tiny_llama_dir: Path, tiny_adapter_dirs: list[Path]) -> Iterator[TestClient]:
    runner = _runner(tiny_llama_dir, max_model_len=64)
    with TestClient(create_app(runner)) as test_client:
        for i, path in enumerate(tiny_adapter_dirs):
            assert test_client.put(f"/v1/adapters/ft{i}", json={"path": str(path)}).status_code == 200
        yield test_client


@pytest.fixture(scope="module")
def tokenizer(tiny_llama_dir: Path) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(str(tiny_llama_dir))


def _text(tokenizer: PreTrainedTokenizerBase, tokens: list[int]) -> str:
    if tokenizer.eos_token_id in tokens:
        tokens = tokens[: tokens.index(tokenizer.eos_token_id)]
    return tokenizer.decode(tokens, skip_special_tokens=True)


def _sse(client: TestClient, path: str, body: dict[str, Any]) -> list[Any]:
    events: list[Any] = []
    with client.stream("POST", path, json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                payload = line[len("data: ") :]
                events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


def _error(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "code", "param"}
    return error


def test_health_reports_the_replica(client: TestClient, tiny_llama_dir: Path) -> None:
    health = client.get("/health").json()
    assert health["status"] == "ready" and health["task_type"] == "text-generation"
    assert health["base_model"] == str(tiny_llama_dir) and health["served_name"] == "tiny"
    assert health["adapters"]["ft0"] == {"status": "loaded", "path": health["adapters"]["ft0"]["path"], "reason": None}
    assert health["running"] == 0 and health["waiting"] == 0


@pytest.mark.parametrize("model", ["tiny", "ft0", "ft1", "ft2"])
def test_greedy_completion_matches_peft_with_usage(
    client: TestClient,
    tokenizer: PreTrainedTokenizerBase,
    peft_greedy: Reference,
    tiny_adapter_dirs: list[Path],
    model: str,
) -> None:
    adapter = None if model == "tiny" else tiny_adapter_dirs[int(model[2])]
    request = {"model": model, "prompt": PROMPTS[0], "max_tokens": 12, "temperature": 0}
    body = client.post("/v1/completions", json=request).json()
    tokens = peft_greedy(adapter, PROMPTS[0], 12)
    assert body["choices"][0]["text"] == _text(tokenizer, tokens)
    assert body["id"].startswith("cmpl-") and body["object"] == "text_completion" and body["model"] == model
    prompt_tokens = len(tokenizer(PROMPTS[0]).input_ids)
    assert body["usage"] == {"prompt_tokens": prompt_tokens, "completion_tokens": len(tokens),
                             "total_tokens": prompt_tokens + len(tokens)}
    assert body["choices"][0]["finish_reason"] == ("stop" if tokenizer.eos_token_id in tokens else "length")


def test_defaults_n_and_prompt_batches(client: TestClient) -> None:
    body = client.post("/v1/completions", json={"model": "tiny", "prompt": "Hello", "ignore_eos": True}).json()
    assert body["usage"]["completion_tokens"] == 16 and body["choices"][0]["finish_reason"] == "length"
    body = client.post(
        "/v1/completions",
        json={"model": "ft1", "prompt": ["Hello", "the cat"], "n": 2, "max_tokens": 3, "ignore_eos": True, "seed": 1},
    ).json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2, 3]
    assert body["usage"]["completion_tokens"] == 12
    ids = client.post("/v1/completions", json={"model": "tiny", "prompt": [0, 5, 6], "max_tokens": 2}).json()
    assert ids["usage"]["prompt_tokens"] == 3


def test_streamed_completion_equals_the_whole_answer(client: TestClient) -> None:
    request = {"model": "ft2", "prompt": PROMPTS[1], "max_tokens": 10, "temperature": 0, "ignore_eos": True}
    whole = client.post("/v1/completions", json=request).json()
    events = _sse(client, "/v1/completions", {**request, "stream": True, "stream_options": {"include_usage": True}})
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == whole["choices"][0]["text"]
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == whole["usage"]
    plain = _sse(client, "/v1/completions", {**request, "stream": True})
    assert all(c["usage"] is None for c in plain[:-1])


def test_chat_streamed_and_not(client: TestClient, tokenizer: PreTrainedTokenizerBase) -> None:
    parts = [{"type": "text", "text": "hi"}]
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": parts}]
    request = {"model": "ft0", "messages": messages, "max_tokens": 8, "temperature": 0}
    whole = client.post("/v1/chat/completions", json=request).json()
    assert whole["id"].startswith("chatcmpl-") and whole["object"] == "chat.completion"
    assert whole["choices"][0]["message"]["role"] == "assistant"
    plain = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    rendered = tokenizer.apply_chat_template(plain, tokenize=False, add_generation_prompt=True)
    assert whole["usage"]["prompt_tokens"] == len(tokenizer(rendered, add_special_tokens=False).input_ids)
    streamed = {**request, "stream": True, "stream_options": {"include_usage": True}}
    events = _sse(client, "/v1/chat/completions", streamed)
    chunks = events[:-1]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[0]["object"] == "chat.completion.chunk"
    text = "".join(c["choices"][0]["delta"]["content"] or "" for c in chunks if c["choices"])
    assert text == whole["choices"][0]["message"]["content"]
    assert chunks[-1]["usage"] == whole["usage"]


def test_context_limits(client: TestClient) -> None:
    long_prompt = " ".join(["apple"] * 80)
    error = _error(client.post("/v1/completions", json={"model": "tiny", "prompt": long_prompt}), 400)
    assert error["code"] == "context_length_exceeded" and "64" in error["message"]
    error = _error(client.post("/v1/completions", json={"model": "tiny", "prompt": "Hello", "max_tokens": 63}), 400)
    assert "maximum context length is 64" in error["message"] and error["param"] == "max_tokens"
    largest = {"model": "tiny", "prompt": "Hello", "max_tokens": 62, "ignore_eos": True}
    fits = client.post("/v1/completions", json=largest)
    assert fits.status_code == 200 and fits.json()["usage"]["total_tokens"] == 64
    chat = client.post("/v1/chat/completions", json={"model": "tiny", "messages": [{"role": "user", "content": "hi"}],
                                                     "ignore_eos": True}).json()
    assert chat["usage"]["total_tokens"] == 64  # no max_tokens: the rest of the context


def test_bad_input_is_a_clean_4xx(client: TestClient) -> None:
    assert _error(client.post("/v1/completions", content=b"{nope"), 400)["code"] == "invalid_json"
    error = _error(client.post("/v1/completions", json={"model": "tiny", "prompt": "x", "max_tokens": "many"}), 400)
    assert error["param"] == "max_tokens"
    _error(client.post("/v1/completions", json={"model": "tiny", "prompt": "x", "temperature": 5}), 400)
    _error(client.post("/v1/completions", json={"model": "tiny", "prompt": "x", "stop": list("abcde")}), 400)
    _error(client.post("/v1/completions", json=["not", "an", "object"]), 400)
    _error(client.post("/v1/chat/completions", json={"model": "tiny", "messages": []}), 400)
    error = _error(client.post("/v1/completions", json={"model": "tiny", "prompt": [99999]}), 400)
    assert "out of range" in error["message"]
    image = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}
    with_image = client.post("/v1/chat/completions", json={"model": "tiny", "messages": [image]})
    assert "text only" in _error(with_image, 400)["message"]
    missing = _error(client.post("/v1/completions", json={"model": "nope", "prompt": "x"}), 404)
    assert missing["code"] == "model_not_found" and missing["type"] == "invalid_request_error"
    assert _error(client.get("/v1/nothing"), 404)["type"] == "not_found_error"
    _error(client.get("/v1/completions"), 405)


def test_adapter_management_over_http(client: TestClient, tiny_adapter_dirs: list[Path], tmp_path: Path) -> None:
    path = str(tiny_adapter_dirs[0])
    loaded = client.put("/v1/adapters/extra", json={"path": path}).json()
    assert loaded == {"name": "extra", "status": "loaded", "path": path, "rank": 8}
    assert client.put("/v1/adapters/extra", json={"path": path}).status_code == 200  # idempotent
    models = [m["id"] for m in client.get("/v1/models").json()["data"]]
    assert "tiny" in models and "extra" in models
    assert client.post("/v1/completions", json={"model": "extra", "prompt": "x", "max_tokens": 2}).status_code == 200
    assert client.delete("/v1/adapters/extra").json() == {"name": "extra", "status": "unloaded"}
    after = client.post("/v1/completions", json={"model": "extra", "prompt": "x"})
    assert _error(after, 404)["code"] == "model_not_found"
    assert _error(client.delete("/v1/adapters/extra"), 404)["code"] == "adapter_not_found"
    failed = _error(client.put("/v1/adapters/broken", json={"path": str(tmp_path / "missing")}), 422)
    assert "does not exist" in failed["message"] and failed["code"] == "adapter_load_failed"
    health = client.get("/health").json()["adapters"]
    assert health["broken"]["status"] == "failed" and "does not exist" in health["broken"]["reason"]
    assert health["ft0"]["status"] == "loaded"
    to_broken = client.post("/v1/completions", json={"model": "broken", "prompt": "x"})
    assert "failed to load" in _error(to_broken, 404)["message"]
    assert client.delete("/v1/adapters/broken").status_code == 200
    _error(client.put("/v1/adapters/tiny", json={"path": path}), 409)
    _error(client.put("/v1/adapters/x", json={}), 422)
    _error(client.put("/v1/adapters/x", content=b"[["), 422)


def test_rank_limit_over_http(tiny_llama_dir: Path, tiny_adapter_dirs: list[Path]) -> None:
    with TestClient(create_app(_runner(tiny_llama_dir, max_lora_rank=4))) as small:
        error = _error(small.put("/v1/adapters/big", json={"path": str(tiny_adapter_dirs[0])}), 422)
        assert "rank 8 exceeds the engine's max_lora_rank 4" in error["message"]
        assert small.put("/v1/adapters/r4", json={"path": str(tiny_adapter_dirs[1])}).status_code == 200


def test_model_without_chat_template(tiny_llama_dir: Path, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    shutil.copytree(tiny_llama_dir, plain)
    (plain / "chat_template.jinja").unlink()
    config_path = plain / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config.pop("chat_template", None)
    config_path.write_text(json.dumps(config))
    with TestClient(create_app(_runner(plain))) as bare:
        chat = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}
        error = _error(bare.post("/v1/chat/completions", json=chat), 400)
        assert "no chat template" in error["message"]
        assert bare.post("/v1/completions", json={"model": "tiny", "prompt": "hi", "max_tokens": 2}).status_code == 200


def test_a_stream_whose_client_left_before_the_first_event_is_aborted(client: TestClient) -> None:
    # The response's body is never iterated when sending its headers already fails; the run must
    # still be aborted (its sequence would otherwise hold a batch row to its last token).
    def aborted() -> float:
        return Scrape.parse(client.get("/metrics").text).value("enginehouse_requests_total", status="aborted")

    before = aborted()
    body = json.dumps({"model": "tiny", "prompt": PROMPTS[0], "max_tokens": 50, "stream": True,
                       "ignore_eos": True}).encode()
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": "/v1/completions", "raw_path": b"/v1/completions", "query_string": b"",
             "root_path": "", "headers": [(b"content-type", b"application/json")],
             "server": ("testserver", 80), "client": ("testclient", 50000)}

    async def call() -> None:
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict[str, Any]:
            if messages:
                return messages.pop()
            await asyncio.sleep(3600)
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                raise OSError("the client went away")

        with contextlib.suppress(OSError):
            await client.app(scope, receive, send)

    client.portal.call(call)  # type: ignore[union-attr]
    assert aborted() == before + 1
    wait_for(lambda: client.get("/health").json()["running"] == 0, timeout=30, what="the sequence to leave")
