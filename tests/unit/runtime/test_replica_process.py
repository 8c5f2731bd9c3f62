"""The replica as the control plane runs it: ``python -m enginehouse.runtime`` in its own process,
with its secret in the environment, called with httpx and the official openai client; calls
without the secret refused; and the CLI's failure contract."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai
import pytest
from transformers import AutoTokenizer

from enginehouse.replicaauth import SECRET_ENV, SECRET_HEADER
from enginehouse.runtime.__main__ import main
from tests.unit.runtime.support import PROMPTS

pytestmark = pytest.mark.integration

Reference = Callable[[Path | None, str, int], list[int]]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


SECRET = "a-test-replica-secret"


class Replica:
    def __init__(self, process: subprocess.Popen[bytes], url: str, log: Path) -> None:
        self.process = process
        self.url = url
        self.log = log

    def http(self, timeout: float) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={SECRET_HEADER: SECRET}, timeout=timeout)

    def openai(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key="anything", max_retries=0,
                             default_headers={SECRET_HEADER: SECRET})


@pytest.fixture(scope="module")
def replica(tiny_llama_dir: Path, src_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replica]:
    port = _free_port()
    log = tmp_path_factory.mktemp("replica") / "stderr.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src_dir), os.environ.get("PYTHONPATH", "")]),
           SECRET_ENV: SECRET}
    command = [
        sys.executable, "-m", "enginehouse.runtime", "--task-type", "text-generation",
        "--base-model", str(tiny_llama_dir), "--served-name", "tiny", "--host", "127.0.0.1",
        "--port", str(port), "--threads", "1", "--runtime-options", json.dumps({"max_loras": 2, "max_model_len": 256}),
    ]
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        if process.poll() is not None:
            pytest.fail(f"replica exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/health", headers={SECRET_HEADER: SECRET}, timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"replica did not become healthy:\n{log.read_text()}")
        time.sleep(0.2)
    yield Replica(process, url, log)
    if process.poll() is None:
        process.kill()
        process.wait(10)


def _text(tiny_llama_dir: Path, tokens: list[int]) -> str:
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_llama_dir))
    if tokenizer.eos_token_id in tokens:
        tokens = tokens[: tokens.index(tokenizer.eos_token_id)]
    return tokenizer.decode(tokens, skip_special_tokens=True)


def test_replica_serves_httpx_and_the_openai_client(
    replica: Replica, tiny_llama_dir: Path, tiny_adapter_dirs: list[Path], peft_greedy: Reference
) -> None:
    http = replica.http(timeout=60)
    health = http.get("/health").json()
    assert health["status"] == "ready" and health["served_name"] == "tiny" and health["adapters"] == {}
    loaded = http.put("/v1/adapters/ft1", json={"path": str(tiny_adapter_dirs[1])})
    assert loaded.status_code == 200 and loaded.json()["status"] == "loaded"
    client = replica.openai()

    for model, adapter in [("tiny", None), ("ft1", tiny_adapter_dirs[1])]:
        reply = client.completions.create(model=model, prompt=PROMPTS[0], max_tokens=12, temperature=0)
        assert reply.choices[0].text == _text(tiny_llama_dir, peft_greedy(adapter, PROMPTS[0], 12))
        usage = reply.usage
        assert usage is not None and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens

    stream = client.completions.create(model="ft1", prompt=PROMPTS[1], max_tokens=10, temperature=0, stream=True)
    streamed = "".join(chunk.choices[0].text for chunk in stream if chunk.choices)
    assert streamed == _text(tiny_llama_dir, peft_greedy(tiny_adapter_dirs[1], PROMPTS[1], 10))

    messages = [{"role": "user", "content": "hello there"}]
    settings = {"model": "ft1", "messages": messages, "max_tokens": 8, "temperature": 0}
    chat = client.chat.completions.create(**settings)  # type: ignore[call-overload]
    chunks = list(client.chat.completions.create(**settings, stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == chat.choices[0].message.content
    last_usage = chunks[-1].usage
    assert last_usage is not None and chat.usage is not None
    assert last_usage.completion_tokens == chat.usage.completion_tokens
    assert {m.id for m in client.models.list().data} == {"tiny", "ft1"}

    assert http.delete("/v1/adapters/ft1").status_code == 200
    with pytest.raises(openai.NotFoundError) as gone:
        client.completions.create(model="ft1", prompt="x", max_tokens=2)
    assert gone.value.code == "model_not_found"


def test_replica_refuses_bad_input_with_4xx(replica: Replica) -> None:
    http = replica.http(timeout=30)
    client = replica.openai()
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="tiny", prompt="x", max_tokens=-3)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nobody", messages=[{"role": "user", "content": "x"}])
    truncated = b'{"model": "tiny", "messages": ['
    malformed = http.post("/v1/chat/completions", content=truncated, headers={"content-type": "application/json"})
    assert malformed.status_code == 400 and malformed.json()["error"]["code"] == "invalid_json"
    wrong = http.post("/v1/completions", json={"model": 5, "prompt": {"a": 1}, "n": "two"})
    assert wrong.status_code == 400 and "error" in wrong.json()
    missing = http.put("/v1/adapters/x", json={"path": "/definitely/not/here"})
    assert missing.status_code == 422 and "does not exist" in missing.json()["error"]["message"]
    assert http.get("/health").json()["status"] == "ready"


def test_a_call_without_the_secret_is_refused(replica: Replica) -> None:
    for headers in ({}, {SECRET_HEADER: "guessed"}):
        for method, path, body in [("GET", "/health", None), ("PUT", "/v1/adapters/x", {"path": "/tmp"}),
                                   ("POST", "/v1/completions", {"model": "tiny", "prompt": "x", "max_tokens": 1})]:
            response = httpx.request(method, f"{replica.url}{path}", json=body, headers=headers, timeout=30)
            assert response.status_code == 401, (path, response.text)
            assert response.json()["error"]["code"] == "replica_secret_refused"
    bare = openai.OpenAI(base_url=f"{replica.url}/v1", api_key="anything", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bare.completions.create(model="tiny", prompt="x", max_tokens=1)
    # The secret is not on the command line, where every user of the machine sees it.
    assert SECRET.encode() not in Path(f"/proc/{replica.process.pid}/cmdline").read_bytes()


def test_client_disconnect_frees_the_sequence_and_shutdown_is_clean(replica: Replica) -> None:
    http = replica.http(timeout=30)
    body = {"model": "tiny", "prompt": "Hello", "max_tokens": 200, "ignore_eos": True, "stream": True}
    with http.stream("POST", "/v1/completions", json=body) as response:
        lines = response.iter_lines()
        assert next(line for line in lines if line.startswith("data: "))
    deadline = time.monotonic() + 30
    while http.get("/health").json()["running"] != 0:
        assert time.monotonic() < deadline, "the abandoned stream kept running"
        time.sleep(0.1)
    replica.process.send_signal(signal.SIGTERM)
    # uvicorn shuts down gracefully, then re-raises the signal: the status says "terminated".
    assert replica.process.wait(timeout=30) in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in replica.log.read_text()


def _stderr_line(capsys: pytest.CaptureFixture[str]) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("ENGINEHOUSE_REPLICA_ERROR: ")]
    assert len(lines) == 1
    return lines[0]


def test_cli_failures_exit_with_one_error_line(
    tiny_llama_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["--base-model", str(tiny_llama_dir), "--port", "1", "--insecure"]
    assert main(["--task-type", "ner-ish", *common]) == 3
    assert "task type 'ner-ish' is not supported" in _stderr_line(capsys)
    assert main(["--task-type", "text-generation", "--base-model", str(tmp_path / "none"), "--port", "1",
                 "--insecure"]) == 3
    assert "does not exist" in _stderr_line(capsys)
    assert main(["--task-type", "text-generation", *common, "--runtime-options", '{"max_loras": 0}']) == 3
    assert "max_loras" in _stderr_line(capsys)
    assert main(["--task-type", "text-generation", *common, "--runtime-options", '{"max_model_len": 100000}']) == 3
    assert "max_position_embeddings 512" in _stderr_line(capsys)
    (tmp_path / "not-a-model").mkdir()
    assert main(["--task-type", "text-generation", "--base-model", str(tmp_path / "not-a-model"), "--port", "1",
                 "--insecure"]) == 3
    assert "could not load" in _stderr_line(capsys)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        assert main(["--task-type", "text-generation", "--base-model", str(tiny_llama_dir), "--port", port,
                     "--insecure"]) == 4
    assert "cannot listen" in _stderr_line(capsys)


def test_without_a_secret_the_replica_does_not_start(
    tiny_llama_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(SECRET_ENV, raising=False)
    assert main(["--task-type", "text-generation", "--base-model", str(tiny_llama_dir), "--port", "1"]) == 3
    assert f"{SECRET_ENV} is not set" in _stderr_line(capsys)
    monkeypatch.setenv(SECRET_ENV, "")  # an empty secret is none
    assert main(["--task-type", "text-generation", "--base-model", str(tiny_llama_dir), "--port", "1"]) == 3
    assert "--insecure" in _stderr_line(capsys)
