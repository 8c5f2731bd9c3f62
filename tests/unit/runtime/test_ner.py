"""NER: grouping token labels into entities (pure), and the replica in-process over a tiny
token-classification BERT whose labels the test sets: each chosen token's embedding points along
its label's axis and the encoder layers pass embeddings through, so that token gets that label."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from transformers import AutoModelForTokenClassification, AutoTokenizer

from enginehouse.demo.tiny_encoders import build_tiny_bert
from enginehouse.runtime.ner.entities import Entity, group_entities, parse_label
from enginehouse.runtime.ner.runner import NerRunner
from enginehouse.runtime.options import RuntimeOptions
from enginehouse.runtime.server import create_app

LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
SENTENCE = "Alice met Bob Smith in New York, then Paris."
# First token of a word → its label. '##i' (a continuation in "smith" and "paris") says B-PER,
# which must not matter: a word takes its first token's label.
MARKS = {"a": "B-PER", "bo": "B-PER", "sm": "I-PER", "n": "B-LOC", "y": "I-LOC", "p": "B-LOC", "##i": "B-PER"}


def build_marked_ner_model(out_dir: Path, marks: dict[str, str], labels: list[str] = LABELS, seed: int = 0) -> Path:
    """A tiny BERT for token classification whose token ``t`` gets label ``marks[t]`` (others O)."""
    build_tiny_bert(out_dir, head="token-classification", labels=labels, num_layers=1, seed=seed)
    tokenizer = AutoTokenizer.from_pretrained(str(out_dir))
    model = AutoModelForTokenClassification.from_pretrained(str(out_dir), dtype=torch.float32)
    label_ids = {label: i for i, label in enumerate(labels)}
    with torch.no_grad():
        embeddings = model.bert.embeddings
        # Axis i stands for label i; every token points along O's axis unless marked.
        embeddings.word_embeddings.weight.zero_()
        embeddings.word_embeddings.weight[:, label_ids["O"]] = 1.0
        for token, label in marks.items():
            token_id = tokenizer.convert_tokens_to_ids(token)
            embeddings.word_embeddings.weight[token_id].zero_()
            embeddings.word_embeddings.weight[token_id, label_ids[label]] = 1.0
        embeddings.position_embeddings.weight.zero_()
        embeddings.token_type_embeddings.weight.zero_()
        for layer in model.bert.encoder.layer:  # residual only: each layer passes its input on
            for dense in (layer.attention.output.dense, layer.output.dense):
                dense.weight.zero_()
                dense.bias.zero_()
        model.classifier.weight.zero_()
        model.classifier.bias.zero_()
        for i in range(len(labels)):
            model.classifier.weight[i, i] = 1.0
    model.save_pretrained(str(out_dir))
    return out_dir


@pytest.fixture(scope="session")
def ner_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_marked_ner_model(tmp_path_factory.mktemp("ner") / "base", MARKS)


def start(model_dir: Path, name: str = "ner", **options: object) -> TestClient:
    runner = NerRunner(base_model=str(model_dir), served_name=name, options=RuntimeOptions(**options))
    runner.load()
    return TestClient(create_app(runner))


@pytest.fixture(scope="module")
def client(ner_dir: Path) -> Iterator[TestClient]:
    with start(ner_dir) as test_client:
        yield test_client


def entities(client: TestClient, text: str | list[str], model: str = "ner", **extra: object) -> list[list[dict]]:
    response = client.post("/v1/ner", json={"model": model, "input": text, **extra})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "list" and body["model"] == model and body["id"].startswith("ner-")
    assert [d["index"] for d in body["data"]] == list(range(len(body["data"])))
    return [d["entities"] for d in body["data"]]


# -- grouping (pure) ---------------------------------------------------------------------------


def _tokens(text: str) -> tuple[list[tuple[int, int]], list[int | None], list[int]]:
    """One token per whitespace-separated word, plus [CLS]/[SEP] around them."""
    offsets, start = [(0, 0)], 0
    for word in text.split(" "):
        offsets.append((start, start + len(word)))
        start += len(word) + 1
    offsets.append((0, 0))
    words = [None, *range(len(offsets) - 2), None]
    special = [1] + [0] * (len(offsets) - 2) + [1]
    return offsets, words, special


def _group(text: str, labels: list[str], scores: list[float] | None = None) -> list[tuple[str, str]]:
    offsets, words, special = _tokens(text)
    padded = ["O", *labels, "O"]
    found = group_entities(text, padded, scores or [0.9] * len(padded), offsets, words, special)
    return [(e.text, e.label) for e in found]


@pytest.mark.parametrize(("label", "parsed"), [
    ("O", (None, None)), ("B-PER", ("B", "PER")), ("I-LOC", ("I", "LOC")), ("PER", (None, "PER")),
    ("S-ORG", ("S", "ORG")), ("B_MISC", ("B", "MISC")), ("Bank", (None, "Bank")),
])
def test_parse_label(label: str, parsed: tuple) -> None:
    assert parse_label(label) == parsed


def test_bio_groups_consecutive_words_of_one_entity() -> None:
    text = "Ann Lee met Bo in New York"
    labels = ["B-PER", "I-PER", "O", "B-PER", "O", "B-LOC", "I-LOC"]
    assert _group(text, labels) == [("Ann Lee", "PER"), ("Bo", "PER"), ("New York", "LOC")]


def test_a_new_b_starts_a_new_entity_and_a_type_change_too() -> None:
    assert _group("Ann Bo Rome", ["B-PER", "B-PER", "I-LOC"]) == [("Ann", "PER"), ("Bo", "PER"), ("Rome", "LOC")]


def test_an_i_without_a_b_starts_an_entity() -> None:
    assert _group("see New York now", ["O", "I-LOC", "I-LOC", "O"]) == [("New York", "LOC")]


def test_plain_labels_group_by_type() -> None:
    assert _group("Ann Lee in Rome", ["PER", "PER", "O", "LOC"]) == [("Ann Lee", "PER"), ("Rome", "LOC")]


def test_bioes_end_and_single_tags() -> None:
    labels = ["B-PER", "E-PER", "S-PER", "S-LOC", "B-LOC", "I-LOC", "E-LOC"]
    assert _group("Ann Lee Bo Rome New York City", labels) == [
        ("Ann Lee", "PER"), ("Bo", "PER"), ("Rome", "LOC"), ("New York City", "LOC")]


def test_word_pieces_join_their_word_and_take_its_first_label() -> None:
    text = "Hello Paris!"
    offsets = [(0, 0), (0, 5), (6, 7), (7, 9), (9, 11), (11, 12), (0, 0)]
    words = [None, 0, 1, 1, 1, 2, None]
    labels = ["O", "O", "B-LOC", "O", "B-PER", "O", "O"]
    scores = [0.5, 0.9, 0.8, 0.6, 0.7, 0.9, 0.5]
    found = group_entities(text, labels, scores, offsets, words, [1, 0, 0, 0, 0, 0, 1])
    assert found == [Entity("Paris", "LOC", 6, 11, pytest.approx((0.8 + 0.6 + 0.7) / 3))]


def test_leading_spaces_in_offsets_are_trimmed() -> None:
    text = "in New York"  # byte-level BPE counts the space into the word's token
    found = group_entities(text, ["O", "B-LOC", "I-LOC"], [1.0, 1.0, 1.0], [(0, 2), (2, 6), (6, 11)],
                           [0, 1, 2], [0, 0, 0])
    assert [(e.text, e.start, e.end) for e in found] == [("New York", 3, 11)]


# -- the replica ---------------------------------------------------------------------------------


def test_entities_with_offsets_into_the_input(client: TestClient) -> None:
    [found] = entities(client, SENTENCE)
    assert [(e["text"], e["label"], e["start"], e["end"]) for e in found] == [
        ("Alice", "PER", 0, 5), ("Bob Smith", "PER", 10, 19), ("New York", "LOC", 23, 31), ("Paris", "LOC", 38, 43)]
    for entity in found:
        assert SENTENCE[entity["start"]: entity["end"]] == entity["text"]
        assert 0.9 < entity["score"] <= 1.0


def test_score_is_the_mean_of_the_tokens_top_probabilities(client: TestClient, ner_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(str(ner_dir))
    model = AutoModelForTokenClassification.from_pretrained(str(ner_dir), dtype=torch.float32).eval()
    encoding = tokenizer(SENTENCE, return_offsets_mapping=True, return_tensors="pt")
    offsets = encoding.pop("offset_mapping")[0].tolist()
    with torch.no_grad():
        top = model(**encoding).logits[0].softmax(-1).max(-1).values.tolist()
    [found] = entities(client, SENTENCE)
    for entity in found:
        inside = [p for p, (a, b) in zip(top, offsets) if b > a and a >= entity["start"] and b <= entity["end"]]
        assert entity["score"] == pytest.approx(float(np.mean(inside)), abs=1e-6)


def test_a_list_of_inputs_answers_per_index(client: TestClient) -> None:
    results = entities(client, ["the cat sat", "Paris", SENTENCE])
    assert results[0] == [] and [e["text"] for e in results[1]] == ["Paris"] and len(results[2]) == 4


def test_usage_counts_tokens(client: TestClient, ner_dir: Path) -> None:
    tokens = len(AutoTokenizer.from_pretrained(str(ner_dir))(SENTENCE).input_ids)
    body = client.post("/v1/ner", json={"model": "ner", "input": SENTENCE}).json()
    assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}


@pytest.mark.parametrize(("body", "fragment"), [
    ({"input": ""}, "must not be empty"),
    ({"input": []}, "must not be empty"),
    ({"input": ["ok", ""]}, "must not be empty"),
    ({"input": [1, 2]}, "input must be a string or a list of strings"),
    ({}, "input"),
])
def test_invalid_bodies_are_400(client: TestClient, body: dict, fragment: str) -> None:
    response = client.post("/v1/ner", json={"model": "ner", **body})
    assert response.status_code == 400 and fragment in response.json()["error"]["message"]


def test_input_over_the_model_length_is_400_unless_truncated(ner_dir: Path) -> None:
    text = "Paris is far. " * 6
    with start(ner_dir, max_model_len=12) as short:
        refused = short.post("/v1/ner", json={"model": "ner", "input": text})
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "context_length_exceeded"
        [found] = entities(short, text, truncate=True)
    # 12 tokens: [CLS], the first 10 of the text, [SEP]. The cut falls inside the second "Paris"
    # (p ##ar ##i ##s): only what the model saw is reported.
    assert [(e["text"], e["start"]) for e in found] == [("Paris", 0), ("P", 14)]


def test_health_lists_labels(client: TestClient) -> None:
    health = client.get("/health").json()
    assert health["task_type"] == "ner" and health["labels"] == LABELS and health["base_served"] is True


def test_swap_to_a_fine_tune_and_back(ner_dir: Path, tmp_path: Path) -> None:
    fine_tune = build_marked_ner_model(tmp_path / "ft", {"p": "B-CITY"}, labels=["O", "B-CITY"], seed=1)
    encoder = build_tiny_bert(tmp_path / "encoder")
    with start(ner_dir) as replica:
        refused = replica.put("/v1/adapters/enc", json={"path": str(encoder)})
        assert refused.status_code == 422 and "not a token-classification model" in refused.json()["error"]["message"]
        assert replica.put("/v1/adapters/ft", json={"path": str(fine_tune)}).status_code == 200
        assert replica.put("/v1/adapters/other", json={"path": str(fine_tune)}).status_code == 409
        health = replica.get("/health").json()
        assert health["base_served"] is False and health["labels"] == ["O", "B-CITY"]
        [found] = entities(replica, SENTENCE, model="ft")
        assert [(e["text"], e["label"]) for e in found] == [("Paris", "CITY")]
        replaced = replica.post("/v1/ner", json={"model": "ner", "input": SENTENCE})
        assert replaced.status_code == 409 and replaced.json()["error"]["code"] == "base_replaced"
        assert replica.delete("/v1/adapters/ft").status_code == 200
        assert len(entities(replica, SENTENCE)[0]) == 4
