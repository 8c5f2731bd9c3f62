"""Bad input, as a new user (or a careless script) sends it, against a real server and real
replicas: every one is a 4xx with the error envelope and a message that says what to do, the
server stays healthy, and other callers never notice. A 10 MB input neither stalls its replica
nor gets it replaced, and an engine whose base model cannot be opened fails once, with the reason.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from enginehouse.demo.tiny_encoders import build_tiny_bert
from tests.integration.harness import ServerProcess, wait_deployments, wait_engine
from tests.integration.test_textgen import create_engine

HUGE = ("the quick brown fox jumps over the lazy dog. " * 230_000)[:10_000_000]
DEEP = b"[" * 1000 + b"]" * 1000


@pytest.fixture(scope="module")
def server(start_server) -> ServerProcess:  # type: ignore[no-untyped-def]
    return start_server()


@pytest.fixture(scope="module")
def engines(server: ServerProcess, tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory
            ) -> dict[str, dict[str, Any]]:
    """A text-generation engine ``gen`` and an embedding engine ``emb``, both serving."""
    http = server.client()
    bert = build_tiny_bert(tmp_path_factory.mktemp("bert") / "base")
    created = {"gen": create_engine(http, "gen", tiny_llama_dir)}
    response = http.post("/v1/engines", json={"name": "emb", "base_model": str(bert), "task_type": "embedding"})
    assert response.status_code == 201, response.text
    created["emb"] = response.json()
    return {name: wait_deployments(http, engine["id"]) for name, engine in created.items()}


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "code", "param"}
    return body["error"]


def post_raw(http: httpx.Client, path: str, raw: bytes) -> httpx.Response:
    return http.post(path, content=raw, headers={"Content-Type": "application/json"})


@pytest.fixture()
def bystander(server: ServerProcess, engines: dict[str, dict[str, Any]]) -> Iterator[None]:
    """Calls the text-generation deployment over and over while the test runs; each call must
    succeed in full, whatever the test sends meanwhile."""
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=server.api_key, max_retries=0)

    def complete() -> str:
        return client.completions.create(model="gen", prompt="the cat", max_tokens=4, temperature=0).choices[0].text

    expected = complete()
    stop = threading.Event()
    answers: list[str] = []

    def call() -> None:
        while not stop.is_set() or not answers:
            answers.append(complete())

    with ThreadPoolExecutor(max_workers=1) as pool:
        running = pool.submit(call)
        yield
        stop.set()
        running.result(timeout=120)
    assert answers and set(answers) == {expected}
    assert httpx.get(f"{server.url}/health").status_code == 200


def test_a_lone_surrogate_is_400_at_the_gateway_and_at_the_replica(
        server: ServerProcess, engines: dict[str, dict[str, Any]], bystander: None) -> None:
    http = server.client()
    bodies = {"/v1/embeddings": b'{"model": "emb", "input": "hi \\ud800"}',
              "/v1/completions": b'{"model": "gen", "prompt": "hi \\udc00", "max_tokens": 2}',
              "/v1/chat/completions": b'{"model": "gen", "messages": [{"role": "user", "content": "\\ud83d"}]}'}
    for path, raw in bodies.items():
        error = error_of(post_raw(http, path, raw), 400)
        assert error["code"] == "invalid_unicode" and "surrogate" in error["message"]
    replica = server.replica_client(engines["emb"]["replicas"][0]["id"])
    error = error_of(post_raw(replica, "/v1/embeddings", bodies["/v1/embeddings"]), 400)
    assert error["code"] == "invalid_unicode"
    # Written as a pair, the same character is ordinary text.
    fine = post_raw(http, "/v1/embeddings", b'{"model": "emb", "input": "hi \\ud83d\\ude00"}')
    assert fine.status_code == 200, fine.text


def test_a_body_nested_1000_deep_is_400(server: ServerProcess, engines: dict[str, dict[str, Any]],
                                        bystander: None) -> None:
    http = server.client()
    for path, raw in {"/v1/embeddings": b'{"model": "emb", "input": ' + DEEP + b"}",
                      "/v1/chat/completions": b'{"model": "gen", "messages": ' + DEEP + b"}",
                      "/v1/completions": b'{"model": "gen", "prompt": ' + DEEP + b"}",
                      "/v1/engines": b'{"name": "deep", "base_model": ' + DEEP + b"}"}.items():
        assert error_of(post_raw(http, path, raw), 400)["code"] == "json_too_deep"
    replica = server.replica_client(engines["gen"]["replicas"][0]["id"])
    raw = b'{"model": "gen", "prompt": ' + DEEP + b"}"
    assert error_of(post_raw(replica, "/v1/completions", raw), 400)["code"] == "json_too_deep"


def test_a_body_over_the_limit_is_413(server: ServerProcess, engines: dict[str, dict[str, Any]],
                                      bystander: None) -> None:
    http = server.client()
    oversized = json.dumps({"model": "emb", "input": "x" * (33 * 1024 * 1024)}).encode()
    error = error_of(post_raw(http, "/v1/embeddings", oversized), 413)
    assert "32 MiB" in error["message"]
    # The replica holds the same limit (the server passed it on), known from Content-Length alone:
    # it answers before the body has even been sent.
    address = server.replica_address(engines["emb"]["replicas"][0]["id"])
    host, port = address.url.removeprefix("http://").split(":")
    secret = "".join(f"{name}: {value}\r\n" for name, value in address.headers().items())
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        connection.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: replica\r\nContent-Type: application/json\r\n"
                           + f"{secret}Content-Length: {len(oversized)}\r\n\r\n".encode() + oversized[:1024])
        status_line = connection.makefile("rb").readline()
    assert status_line.split()[1] == b"413"


def test_a_nul_in_a_path_or_base_model_is_422(server: ServerProcess, tiny_llama_dir: Path) -> None:
    http = server.client()
    job = {"name": "nul-job", "task_type": "text-generation", "base_model": str(tiny_llama_dir),
           "checkpoints": [{"checkpoint": 1, "path": "/adapters/a\x00b"}]}
    error = error_of(http.post("/v1/training-jobs", json=job), 422)
    assert error["param"] == "checkpoints.0.path" and "NUL" in error["message"]
    engine = {"name": "nul", "base_model": f"{tiny_llama_dir}\x00", "task_type": "text-generation"}
    error = error_of(http.post("/v1/engines", json=engine), 422)
    assert error["param"] == "base_model" and "NUL" in error["message"]
    assert "nul" not in {e["name"] for e in http.get("/v1/engines").json()["data"]}


def test_stream_false_as_a_string_is_never_an_event_stream(server: ServerProcess,
                                                          engines: dict[str, dict[str, Any]]) -> None:
    http = server.client()
    response = http.post("/v1/completions", json={"model": "gen", "prompt": "the cat", "max_tokens": 3,
                                                  "stream": "false"})
    assert response.headers["content-type"].startswith("application/json")
    assert "data:" not in response.text
    assert error_of(response, 400)["param"] == "stream"
    response = http.post("/v1/embeddings", json={"model": "emb", "input": "x", "truncate": "false"})
    assert error_of(response, 400)["param"] == "truncate"


def test_a_10_mb_input_never_stalls_its_replica(server: ServerProcess, engines: dict[str, dict[str, Any]]) -> None:
    http = server.client()
    emb = engines["emb"]
    replica_id = emb["replicas"][0]["id"]
    events_before = http.get(f"/v1/engines/{emb['id']}/events").json()["data"]
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=server.api_key, max_retries=0)
    reference = client.embeddings.create(model="emb", input="the cat sat").data[0].embedding
    stop = threading.Event()
    answers: list[list[float]] = []

    def bystander() -> None:  # the same replica, small requests, all the while
        while not stop.is_set() or not answers:
            answers.append(client.embeddings.create(model="emb", input="the cat sat").data[0].embedding)

    with ThreadPoolExecutor(max_workers=1) as pool:
        running = pool.submit(bystander)
        try:
            refused = http.post("/v1/embeddings", json={"model": "emb", "input": HUGE})
            cut = http.post("/v1/embeddings", json={"model": "emb", "input": HUGE, "truncate": True})
        finally:
            stop.set()
        running.result(timeout=120)
    error = error_of(refused, 400)
    assert error["code"] == "context_length_exceeded" and '"truncate": true' in error["message"]
    assert cut.status_code == 200, cut.text
    assert cut.json()["usage"]["prompt_tokens"] == 256  # the tiny BERT's position table
    short = http.post("/v1/embeddings", json={"model": "emb", "input": HUGE[:20_000], "truncate": True})
    assert cut.json()["data"][0]["embedding"] == pytest.approx(short.json()["data"][0]["embedding"], abs=1e-6)
    assert answers and all(a == pytest.approx(reference, abs=1e-6) for a in answers)
    after = http.get(f"/v1/engines/{emb['id']}").json()
    assert [r["id"] for r in after["replicas"]] == [replica_id]
    assert {d["status"] for d in after["deployments"]} == {"Deployed"}
    assert http.get(f"/v1/engines/{emb['id']}/events").json()["data"] == events_before


def test_an_engine_whose_base_model_cannot_be_opened_fails_once(server: ServerProcess, tmp_path: Path) -> None:
    http = server.client()
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text("{ this is not json")
    engine = create_engine(http, "broken", broken)
    failed = wait_engine(http, engine["id"], "Failed", timeout=120)
    assert str(broken) in failed["status_reason"] and failed["replicas"] == []
    # Later passes of the reconciler leave it as it is: one failure, no retries.
    wait_engine(http, create_engine(http, "after-broken", broken)["id"], "Failed", timeout=120)
    events = http.get(f"/v1/engines/{engine['id']}/events").json()["data"]
    assert [e["to"] for e in events if e["object"] == engine["id"]] == ["Provisioning", "Failed"]
    # One replica tried, not a retry after it: its launch and its removal.
    assert [e["to"] for e in events if e["object"] != engine["id"]] == ["starting", "removed"]
    assert "Traceback" not in server.log_tail(400)


def test_405_names_the_allowed_methods(server: ServerProcess, engines: dict[str, dict[str, Any]]) -> None:
    http = server.client()
    response = http.put("/v1/engines")
    assert error_of(response, 405)["code"] == "method_not_allowed"
    assert response.headers["allow"] == "GET, POST"
    replica = server.replica_client(engines["gen"]["replicas"][0]["id"])
    assert replica.get("/v1/completions").headers["allow"] == "POST"
