"""Text generation end to end: a real server, real replicas, the official openai client.

One engine with three LoRA deployments is shared by the tests of this module (starting replicas
is the slow part); tests that change the engine's state use engines of their own.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from enginehouse.replicaauth import SECRET_HEADER
from tests.integration.harness import ServerProcess, replica_pids, wait_deployments, wait_engine, wait_for
from tests.integration.reference import greedy_chat, greedy_completion
from tests.prometheus import Scrape

PROMPTS = ["the cat sat on the", "once upon a time there was", "models serve many adapters"]


class TextgenSetup:
    def __init__(self, server: ServerProcess, engine: dict[str, Any], adapters: dict[str, Path],
                 base_dir: Path, job: dict[str, Any]) -> None:
        self.server = server
        self.engine = engine
        self.adapters = adapters  # deployment name → adapter dir
        self.base_dir = base_dir
        self.job = job
        self.http = server.client()
        self.openai = openai.OpenAI(base_url=f"{server.url}/v1", api_key=server.api_key, max_retries=0)

    @property
    def base_name(self) -> str:
        return self.engine["name"]

    def adapter_dir(self, model: str) -> Path | None:
        return self.adapters.get(model)


def register_job(http: httpx.Client, base_dir: Path, adapter_dirs: list[Path], name: str = "job") -> dict[str, Any]:
    body = {"name": name, "task_type": "text-generation", "base_model": str(base_dir),
            "checkpoints": [{"checkpoint": i + 1, "path": str(p)} for i, p in enumerate(adapter_dirs)]}
    response = http.post("/v1/training-jobs", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def create_engine(http: httpx.Client, name: str, base_dir: Path, **extra: Any) -> dict[str, Any]:
    response = http.post("/v1/engines", json={"name": name, "base_model": str(base_dir),
                                              "task_type": "text-generation", **extra})
    assert response.status_code == 201, response.text
    return response.json()


def deploy(http: httpx.Client, engine_id: str, name: str, job_id: str, checkpoint: int) -> dict[str, Any]:
    response = http.post(f"/v1/engines/{engine_id}/deploy",
                         json={"name": name, "training_id": job_id, "checkpoint": checkpoint})
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture(scope="module")
def textgen(start_server, tiny_llama_dir: Path, tiny_adapter_dirs: list[Path]) -> TextgenSetup:  # type: ignore[no-untyped-def]
    server = start_server()
    http = server.client()
    job = register_job(http, tiny_llama_dir, tiny_adapter_dirs)
    engine = create_engine(http, "tiny", tiny_llama_dir)
    names = {f"tiny-ft{i + 1}": path for i, path in enumerate(tiny_adapter_dirs)}
    # one deployment created before the engine is up (Pending), the others after
    first = deploy(http, engine["id"], "tiny-ft1", job["id"], 1)
    assert first["status"] == "Pending"
    wait_engine(http, engine["id"], "Active")
    deploy(http, engine["id"], "tiny-ft2", job["id"], 2)
    response = http.post("/v1/deployments", json={
        "name": "tiny-ft3", "engine_id": engine["id"],
        "source": {"type": "training_job", "training_id": job["id"], "checkpoint": 3}})
    assert response.status_code == 201, response.text
    engine = wait_deployments(http, engine["id"])
    return TextgenSetup(server, engine, names, tiny_llama_dir, job)


def test_base_deployment_appears_with_the_engine(textgen: TextgenSetup) -> None:
    deployments = {d["name"]: d for d in textgen.engine["deployments"]}
    assert deployments["tiny"]["kind"] == "base" and deployments["tiny"]["source"] == {"type": "base"}
    assert {n for n, d in deployments.items() if d["kind"] == "fine-tuned"} == set(textgen.adapters)
    replicas = textgen.engine["replicas"]
    assert len(replicas) == 1 and replicas[0]["status"] == "ready" and replicas[0]["url"].startswith("http://127.0.0.1:")
    events = textgen.http.get(f"/v1/engines/{textgen.engine['id']}/events").json()["data"]
    engine_path = [e["to"] for e in events if e["object"] == textgen.engine["id"]]
    assert engine_path == ["Provisioning", "Active"]
    ft1 = [e["to"] for e in events if e["name"] == "tiny-ft1"]
    assert ft1 == ["Pending", "Deploying", "Deployed"]


def test_a_replica_answers_only_with_its_secret_and_the_gateway_has_it(
    textgen: TextgenSetup, tiny_llama_dir: Path
) -> None:
    [replica] = textgen.engine["replicas"]
    address = textgen.server.replica_address(replica["id"])
    assert address.secret and address.url == replica["url"]
    body = {"model": "tiny-ft1", "prompt": PROMPTS[0], "max_tokens": 4, "temperature": 0}
    # Whoever reaches the port without the secret (another user of the machine) is refused, the
    # adapter endpoints and health included; the server's own API key is no secret of a replica's.
    for headers in ({}, {SECRET_HEADER: "guessed"}, {"Authorization": f"Bearer {textgen.server.api_key}"}):
        with httpx.Client(base_url=replica["url"], headers=headers, timeout=30) as stranger:
            for response in (stranger.post("/v1/completions", json=body), stranger.get("/health"),
                             stranger.put("/v1/adapters/evil", json={"path": str(tiny_llama_dir)}),
                             stranger.delete("/v1/adapters/tiny-ft1")):
                assert response.status_code == 401, response.text
                assert response.json()["error"]["code"] == "replica_secret_refused"
    # Nothing was changed by those calls; through the gateway the same call is answered.
    with textgen.server.replica_client(replica["id"]) as own:
        assert set(own.get("/health").json()["adapters"]) == set(textgen.adapters)
    reply = textgen.openai.completions.create(**body)
    assert reply.choices[0].text == greedy_completion(tiny_llama_dir, textgen.adapters["tiny-ft1"], PROMPTS[0], 4)
    # The secret is never shown: not by the API, not in the server's log.
    assert address.secret not in textgen.http.get("/v1/engines").text
    assert address.secret not in textgen.http.get(f"/v1/engines/{textgen.engine['id']}").text
    assert address.secret not in textgen.server.log_tail(100_000)


def test_models_lists_deployments_with_parent(textgen: TextgenSetup) -> None:
    models = {m.id: m for m in textgen.openai.models.list().data}
    assert set(models) == {"tiny", *textgen.adapters}
    assert models["tiny-ft2"].model_extra["parent"] == "tiny"
    assert models["tiny"].model_extra["parent"] is None
    assert models["tiny"].owned_by == "default"
    assert all(m.model_extra["status"] == "Deployed" for m in models.values())


@pytest.mark.parametrize("model", ["tiny", "tiny-ft1", "tiny-ft2", "tiny-ft3"])
def test_greedy_completion_equals_peft(textgen: TextgenSetup, model: str) -> None:
    for prompt in PROMPTS[:2]:
        reply = textgen.openai.completions.create(model=model, prompt=prompt, max_tokens=12, temperature=0)
        expected = greedy_completion(textgen.base_dir, textgen.adapter_dir(model), prompt, 12)
        assert reply.choices[0].text == expected
        assert reply.usage is not None and reply.usage.completion_tokens >= 1


def test_adapters_differ_from_the_base_model(textgen: TextgenSetup) -> None:
    outputs = {
        model: textgen.openai.completions.create(model=model, prompt=PROMPTS[0], max_tokens=12,
                                                 temperature=0).choices[0].text
        for model in ["tiny", *textgen.adapters]
    }
    assert len(set(outputs.values())) == len(outputs), outputs


def test_chat_greedy_equals_peft_streamed_and_not(textgen: TextgenSetup) -> None:
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}]
    expected = greedy_chat(textgen.base_dir, textgen.adapters["tiny-ft2"], messages, 10)
    reply = textgen.openai.chat.completions.create(model="tiny-ft2", messages=messages,  # type: ignore[arg-type]
                                                   max_tokens=10, temperature=0)
    assert reply.choices[0].message.content == expected
    assert reply.choices[0].message.role == "assistant"
    stream = textgen.openai.chat.completions.create(model="tiny-ft2", messages=messages,  # type: ignore[arg-type]
                                                    max_tokens=10, temperature=0, stream=True,
                                                    stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected
    usage = [c.usage for c in chunks if c.usage is not None]
    assert len(usage) == 1 and usage[0].completion_tokens == reply.usage.completion_tokens  # type: ignore[union-attr]


def test_concurrent_requests_to_several_adapters(textgen: TextgenSetup) -> None:
    jobs = [(model, prompt) for model in ["tiny", *textgen.adapters] for prompt in PROMPTS]

    def call(job: tuple[str, str]) -> str:
        model, prompt = job
        return textgen.openai.completions.create(model=model, prompt=prompt, max_tokens=10,
                                                 temperature=0).choices[0].text

    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        answers = list(pool.map(call, jobs))
    for (model, prompt), answer in zip(jobs, answers):
        assert answer == greedy_completion(textgen.base_dir, textgen.adapter_dir(model), prompt, 10), (model, prompt)


def test_sampling_parameters(textgen: TextgenSetup) -> None:
    kwargs = dict(model="tiny-ft1", prompt=PROMPTS[1], max_tokens=8, temperature=1.0, top_p=0.9, seed=1234)
    first = textgen.openai.completions.create(**kwargs, extra_body={"top_k": 50})  # type: ignore[arg-type]
    second = textgen.openai.completions.create(**kwargs, extra_body={"top_k": 50})  # type: ignore[arg-type]
    assert first.choices[0].text == second.choices[0].text
    several = textgen.openai.completions.create(model="tiny", prompt=PROMPTS[0], max_tokens=6, n=3,
                                                temperature=1.0, seed=5)
    assert [c.index for c in several.choices] == [0, 1, 2]
    ignore = textgen.openai.completions.create(model="tiny", prompt=PROMPTS[0], max_tokens=20, temperature=0,
                                               extra_body={"ignore_eos": True})
    assert ignore.usage.completion_tokens == 20 and ignore.choices[0].finish_reason == "length"  # type: ignore[union-attr]


def test_stop_strings(textgen: TextgenSetup) -> None:
    full = textgen.openai.completions.create(model="tiny", prompt=PROMPTS[0], max_tokens=20, temperature=0,
                                             extra_body={"ignore_eos": True}).choices[0].text
    stop = full[len(full) // 2: len(full) // 2 + 2]
    if not stop.strip():
        pytest.skip("the greedy text has no usable stop string at its middle")
    cut = textgen.openai.completions.create(model="tiny", prompt=PROMPTS[0], max_tokens=20, temperature=0,
                                            stop=[stop], extra_body={"ignore_eos": True})
    assert cut.choices[0].text == full[: full.index(stop)]
    assert cut.choices[0].finish_reason == "stop"


def test_inference_errors_through_the_client(textgen: TextgenSetup) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        textgen.openai.completions.create(model="no-such-model", prompt="x", max_tokens=2)
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError):
        textgen.openai.completions.create(model="tiny", prompt="x", max_tokens=-3)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{textgen.server.url}/v1", api_key="wrong", max_retries=0).models.list()
    wrong = textgen.http.post("/v1/embeddings", json={"model": "tiny-ft1", "input": "x"})
    assert wrong.status_code == 400 and "/v1/chat/completions" in wrong.json()["error"]["message"]


def test_undeploy_while_streaming_to_another_loses_nothing(textgen: TextgenSetup) -> None:
    """Streams to tiny-ft1 and tiny-ft3 run while a fresh deployment is undeployed mid-stream."""
    http = textgen.http
    deploy(http, textgen.engine["id"], "tiny-extra", textgen.job["id"], 2)
    wait_deployments(http, textgen.engine["id"])
    results: dict[str, int] = {}
    started = threading.Barrier(4)

    def stream(model: str) -> None:
        chunks = textgen.openai.completions.create(model=model, prompt=PROMPTS[2], max_tokens=48,
                                                   temperature=0, stream=True,
                                                   stream_options={"include_usage": True},
                                                   extra_body={"ignore_eos": True})
        count = 0
        for chunk in chunks:
            if count == 0:
                started.wait(timeout=60)
            if chunk.usage is not None:
                results[model] = chunk.usage.completion_tokens
            count += 1

    threads = [threading.Thread(target=stream, args=(m,)) for m in ("tiny-ft1", "tiny-ft3", "tiny-extra")]
    for thread in threads:
        thread.start()
    started.wait(timeout=60)
    response = http.post(f"/v1/engines/{textgen.engine['id']}/undeploy", json={"deployment_name": "tiny-extra"})
    assert response.status_code == 202
    for thread in threads:
        thread.join(timeout=120)
    assert results == {"tiny-ft1": 48, "tiny-ft3": 48, "tiny-extra": 48}

    def unloaded() -> bool:
        reply = http.post("/v1/completions", json={"model": "tiny-extra", "prompt": "x", "max_tokens": 2})
        return reply.status_code == 404
    wait_for(unloaded, timeout=30, what="tiny-extra to be gone")
    with textgen.server.replica_client(textgen.engine["replicas"][0]["id"]) as replica:
        wait_for(lambda: "tiny-extra" not in replica.get("/health").json()["adapters"], timeout=30,
                 what="the replica to unload tiny-extra")


def test_deactivate_then_reactivate_restores_the_same_deployments(
    start_server, tiny_llama_dir: Path, tiny_adapter_dirs: list[Path], textgen: TextgenSetup  # type: ignore[no-untyped-def]
) -> None:
    http = textgen.http
    engine = create_engine(http, "sleepy", tiny_llama_dir)
    deploy(http, engine["id"], "sleepy-ft", textgen.job["id"], 1)
    wait_deployments(http, engine["id"])
    assert http.post(f"/v1/engines/{engine['id']}/deactivate").status_code == 202
    inactive = wait_engine(http, engine["id"], "Inactive")
    assert {d["status"] for d in inactive["deployments"]} == {"Deactivated"} and inactive["replicas"] == []
    asleep = http.post("/v1/completions", json={"model": "sleepy-ft", "prompt": "x", "max_tokens": 2})
    assert asleep.status_code == 503 and int(asleep.headers["Retry-After"]) > 0
    assert "Deactivated" in asleep.json()["error"]["message"]
    assert http.post(f"/v1/engines/{engine['id']}/deactivate").status_code == 409
    assert http.post(f"/v1/engines/{engine['id']}/reactivate").status_code == 202
    back = wait_deployments(http, engine["id"])
    assert sorted(d["name"] for d in back["deployments"]) == ["sleepy", "sleepy-ft"]
    reply = textgen.openai.completions.create(model="sleepy-ft", prompt=PROMPTS[0], max_tokens=8, temperature=0)
    assert reply.choices[0].text == greedy_completion(tiny_llama_dir, tiny_adapter_dirs[0], PROMPTS[0], 8)
    events = http.get(f"/v1/engines/{engine['id']}/events").json()["data"]
    ft = [e["to"] for e in events if e["name"] == "sleepy-ft"]
    assert ft[-3:] == ["Deactivated", "Reactivating", "Deployed"]
    _delete_and_check_processes_end(textgen, engine["id"])


def _delete_and_check_processes_end(textgen: TextgenSetup, engine_id: str) -> None:
    http = textgen.http
    engine = http.get(f"/v1/engines/{engine_id}").json()
    with ExitStack() as clients:
        replicas = [clients.enter_context(textgen.server.replica_client(r["id"], timeout=2))
                    for r in engine["replicas"]]
        before = set(replica_pids(textgen.server.data_dir))
        assert http.delete(f"/v1/engines/{engine_id}").status_code == 202
        wait_for(lambda: http.get(f"/v1/engines/{engine_id}").status_code == 404, timeout=60,
                 what="the engine to be gone")
        assert replicas
        for replica in replicas:
            with pytest.raises(httpx.HTTPError):
                replica.get("/health")
    after = set(replica_pids(textgen.server.data_dir))
    assert len(before - after) == 1
    names = [m.id for m in textgen.openai.models.list().data]
    assert engine["name"] not in names


def test_inactive_timeout_sleeps_and_a_request_wakes_it(
    tiny_llama_dir: Path, textgen: TextgenSetup
) -> None:
    http = textgen.http
    engine = create_engine(http, "napper", tiny_llama_dir, resource_management_config={
        "management_type": "inactive_timeout", "management_config": {"inactive_duration": 2}})
    wait_engine(http, engine["id"], "Active")
    wait_engine(http, engine["id"], "Inactive", timeout=60)
    reply = textgen.openai.completions.create(model="napper", prompt=PROMPTS[0], max_tokens=5, temperature=0,
                                              timeout=120)
    assert reply.choices[0].text == greedy_completion(tiny_llama_dir, None, PROMPTS[0], 5)
    events = http.get(f"/v1/engines/{engine['id']}/events").json()["data"]
    reasons = [(e["to"], e["reason"]) for e in events if e["object"] == engine["id"]]
    assert ("Deactivating", "no inference request for 2 s (inactive timeout)") in reasons
    assert ("Reactivating", "inference request") in reasons
    http.delete(f"/v1/engines/{engine['id']}")


def test_a_client_leaving_a_stream_frees_its_sequence_on_the_replica(textgen: TextgenSetup) -> None:
    """The gateway closes its connection to the replica when the client goes, and the replica
    drops the sequence instead of generating to the end."""
    with textgen.server.replica_client(textgen.engine["replicas"][0]["id"]) as replica:

        def aborted() -> float:
            page = Scrape.parse(replica.get("/metrics").text)
            return page.value("enginehouse_requests_total", deployment="tiny-ft2", status="aborted")

        before = aborted()
        body = {"model": "tiny-ft2", "prompt": PROMPTS[0], "max_tokens": 400, "temperature": 0,
                "stream": True, "ignore_eos": True}
        with textgen.server.client() as http, http.stream("POST", "/v1/completions", json=body) as response:
            assert response.status_code == 200
            assert next(line for line in response.iter_lines() if line.startswith("data: "))
        wait_for(lambda: aborted() == before + 1, timeout=30, what="the replica to count the stream as aborted")
        assert replica.get("/health").json()["running"] == 0
    # The engine goes on serving.
    reply = textgen.openai.completions.create(model="tiny-ft2", prompt=PROMPTS[0], max_tokens=3)
    assert reply.usage is not None and reply.usage.completion_tokens == 3


def test_a_client_giving_up_on_a_plain_request_frees_its_sequence(textgen: TextgenSetup) -> None:
    """A non-streamed call writes nothing until its end; its client timing out must still stop
    the generation (the gateway closes its call to the replica, the replica cancels the run)."""
    with textgen.server.replica_client(textgen.engine["replicas"][0]["id"]) as replica:

        def aborted() -> float:
            page = Scrape.parse(replica.get("/metrics").text)
            return page.value("enginehouse_requests_total", deployment="tiny-ft3", status="aborted")

        before = aborted()
        body = {"model": "tiny-ft3", "prompt": PROMPTS[1], "max_tokens": 480, "temperature": 0, "ignore_eos": True}
        with textgen.server.client() as http, pytest.raises(httpx.ReadTimeout):
            http.post("/v1/completions", json=body, timeout=httpx.Timeout(30, read=0.2))
        wait_for(lambda: aborted() == before + 1, timeout=30, what="the replica to count the call as aborted")
        assert replica.get("/health").json()["running"] == 0
