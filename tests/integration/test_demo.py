"""``enginehouse up --demo`` end to end, as ``make up`` runs it: a real server sets the demo up in
the background (answering meanwhile), trains the support-ticket fine-tune and builds the urgency
experiment in real worker processes, and every demo deployment answers through the gateway with
real content; a second start on the same data directory creates nothing and answers the same.

The harness sets HF_HUB_OFFLINE=1, so the text-generation part is the offline fallback: the tiny
model built on the spot with its two adapters.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import OpenAI

from tests.integration.harness import ServerProcess, wait_for
from tests.training_data import CLEAR

# The first test's fixture waits for the whole set-up: 2.5 min on 2 idle cores, more on a busy
# machine, past the suite's default per-test limit.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

CALLABLE = {"demo-embeddings", "support-tickets", "urgency", "demo", "demo-pirate", "demo-poet"}
ENGINES = {"demo-embeddings": "embedding", "demo-classifier": "classification", "demo": "text-generation"}
# Tickets written for this test, none in the training data, each plainly about one topic.
UNSEEN_TICKETS = [
    ("Why was my credit card charged twice for the same invoice?", "billing"),
    ("I'd like a refund for last month's subscription fee.", "billing"),
    ("Please send me an invoice with our VAT number on it.", "billing"),
    ("I forgot my password and the reset link doesn't work.", "account"),
    ("How do I change the email address I sign in with?", "account"),
    ("Please delete my account and everything in it.", "account"),
    ("My package hasn't been delivered and the tracking hasn't moved in a week.", "shipping"),
    ("The courier left my parcel at the wrong address.", "shipping"),
    ("Can you send my order to a different delivery address?", "shipping"),
    ("The app keeps crashing when I open the settings page.", "technical"),
    ("I get error 502 every time I upload a file.", "technical"),
    ("The website is very slow and some pages never load.", "technical"),
]


@pytest.fixture(scope="module")
def database_url() -> str:
    """SQLite only: what this test shows is the demo's content and its reuse, which do not
    depend on the database (the other integration tests run both)."""
    return ""


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("demo-data")


@pytest.fixture(scope="module")
def server(start_server, data_dir: Path) -> ServerProcess:  # type: ignore[no-untyped-def]
    server: ServerProcess = start_server(data_dir=data_dir, demo=True)
    # The server answers while the demo is still being prepared.
    assert httpx.get(f"{server.url}/health", timeout=5).status_code == 200
    wait_until_served(server.client(), timeout=540)
    wait_for_log(server, "demo: ready after")
    return server


def wait_for_log(server: ServerProcess, text: str, offset: int = 0) -> str:
    """The server's log from byte ``offset`` on, once it holds ``text`` (the demo polls each second,
    so its line may come a moment after what it reports is visible)."""
    def logged() -> str | None:
        log = server.log_path.read_bytes()[offset:].decode(errors="replace")
        return log if text in log else None

    return wait_for(logged, 30, what=f"{text!r} in {server.log_path}")


def wait_until_served(http: httpx.Client, timeout: float) -> dict[str, Any]:
    """Every demo deployment Deployed and every demo engine with a ready replica; the engines by
    name."""
    def served() -> dict[str, Any] | None:
        engines = {e["name"]: e for e in http.get("/v1/engines").json()["data"] if e["name"] in ENGINES}
        if set(engines) != set(ENGINES):
            return None
        detailed = {name: http.get(f"/v1/engines/{e['id']}").json() for name, e in engines.items()}
        failed = [f"{d['name']}: {d['status_reason']}" for e in detailed.values() for d in e["deployments"]
                  if d["status"] == "Failed"]
        assert not failed, failed
        deployed = {d["name"] for e in detailed.values() for d in e["deployments"] if d["status"] == "Deployed"}
        ready = all(any(r["status"] == "ready" for r in e["replicas"]) for e in detailed.values())
        return detailed if ready and CALLABLE <= deployed else None

    return wait_for(served, timeout, interval=1, what="every demo deployment to serve")


def inventory(http: httpx.Client) -> dict[str, Any]:
    """The ids of everything the demo made, by kind and name."""
    def ids(path: str) -> list[tuple[str, str]]:
        return sorted((item["name"], item["id"]) for item in http.get(path).json()["data"])

    return {kind: ids(f"/v1/{kind}") for kind in ("engines", "deployments", "datasets", "training-jobs",
                                                   "experiments")}


def openai_client(server: ServerProcess) -> OpenAI:
    return OpenAI(base_url=f"{server.url}/v1", api_key=server.api_key, max_retries=0)


def classify(http: httpx.Client, model: str, texts: list[str]) -> list[str]:
    answer = http.post("/v1/classification", json={"model": model, "input": texts, "data_format": "probs"})
    assert answer.status_code == 200, answer.text
    return [max(item["probs"], key=item["probs"].get) for item in answer.json()["data"]]


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def test_the_demo_sets_itself_up_in_the_background_and_says_how_it_goes(server: ServerProcess) -> None:
    http = server.client()
    log = server.log_path.read_text(errors="replace")
    for line in ("demo: setting up in the background", "demo: dataset 'support-tickets' (300 support tickets)",
                 "demo: fine-tuning support-tickets", "(epoch 4/4", "demo: 'support-tickets' deployed",
                 "demo: 'urgency' deployed", "HF_HUB_OFFLINE is set", "demo: ready after"):
        assert line in log, f"{line!r} not in the server's log:\n{server.log_tail()}"
    jobs = {job["name"]: job for job in http.get("/v1/training-jobs").json()["data"]}
    tickets = jobs["support-tickets"]
    assert tickets["status"] == "Success" and tickets["train_test_split_ratio"] == 0.2
    best = max(c["test_results"]["accuracy"] for c in tickets["checkpoints"])
    assert best >= 0.85, tickets["checkpoints"]
    experiment = next(e for e in http.get("/v1/experiments").json()["data"] if e["name"] == "urgency")
    assert experiment["mode"] == "decision" and experiment["labels"] == ["urgent", "not_urgent"]
    deployments = {d["name"]: d for d in http.get("/v1/deployments").json()["data"]}
    assert deployments["support-tickets"]["source"]["training_id"] == tickets["id"]
    assert deployments["urgency"]["source"] == {"type": "experiment", "experiment_id": experiment["id"], "version": 1}
    engines = {e["name"]: e for e in http.get("/v1/engines").json()["data"]}
    assert {name: engines[name]["task_type"] for name in ENGINES} == ENGINES


def test_embeddings_are_384_dimensional_and_put_like_sentences_together(server: ServerProcess) -> None:
    answer = openai_client(server).embeddings.create(
        model="demo-embeddings", input=["The cat sits on the mat.", "A kitten is resting on a rug.",
                                        "Quarterly revenue grew by eight percent."])
    vectors = [item.embedding for item in answer.data]
    assert [len(v) for v in vectors] == [384, 384, 384]
    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2]) + 0.3


def test_the_fine_tune_sorts_unseen_tickets_by_topic(server: ServerProcess) -> None:
    predicted = classify(server.client(), "support-tickets", [text for text, _ in UNSEEN_TICKETS])
    right = sum(p == label for p, (_, label) in zip(predicted, UNSEEN_TICKETS))
    assert right >= len(UNSEEN_TICKETS) - 1, list(zip(predicted, UNSEEN_TICKETS))


def test_the_zero_shot_experiment_tells_urgent_from_routine(server: ServerProcess) -> None:
    assert classify(server.client(), "urgency", [text for text, _ in CLEAR]) == [label for _, label in CLEAR]


def test_text_generation_answers_on_the_base_and_its_adapters(server: ServerProcess) -> None:
    client = openai_client(server)
    chat = client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "Hello!"}],
                                          max_tokens=8)
    assert chat.choices[0].message.content and chat.usage is not None and 0 < chat.usage.completion_tokens <= 8
    answers = {model: client.completions.create(model=model, prompt="Once upon a time", max_tokens=8,
                                                temperature=0).choices[0].text
               for model in ("demo", "demo-pirate", "demo-poet")}
    assert all(answers.values()) and len(set(answers.values())) == 3, answers  # each adapter its own


def test_a_second_start_reuses_everything(server: ServerProcess, start_server, data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    before = inventory(server.client())
    server.stop()
    offset = server.log_path.stat().st_size
    again: ServerProcess = start_server(data_dir=data_dir, api_key=server.api_key, demo=True)
    http = again.client()
    wait_until_served(http, timeout=240)
    assert inventory(http) == before
    demo_lines = [line for line in wait_for_log(again, "demo: ready after", offset).splitlines()
                  if "demo: " in line]
    log = "\n".join(demo_lines)
    assert not any(word in log for word in ("created", "queued", "stored", "building")), log
    for name in ENGINES:
        assert f"demo: engine '{name}' exists (an earlier start made it): reused" in log
    assert "demo: ready after" in log
    # And it all still answers.
    predicted = classify(http, "support-tickets", [text for text, _ in UNSEEN_TICKETS])
    assert sum(p == label for p, (_, label) in zip(predicted, UNSEEN_TICKETS)) >= len(UNSEEN_TICKETS) - 1
    assert classify(http, "urgency", [CLEAR[0][0], CLEAR[-1][0]]) == [CLEAR[0][1], CLEAR[-1][1]]
    assert openai_client(again).embeddings.create(model="demo-embeddings", input="hello").data[0].embedding
