"""Datasets are refused before training, each problem naming its file and line; splits are
deterministic and never lose a label from the training side."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from enginehouse.training.data import (
    ChatExample,
    ClassificationExample,
    CompletionExample,
    DatasetError,
    EntitySpan,
    NerExample,
    RegressionExample,
    check_test_labels,
    label_names,
    read_examples,
    split_examples,
)

GOOD = {
    "classification": '{"text": "fine", "label": "a"}',
    "regression": '{"text": "fine", "value": 0.5}',
    "text-generation": '{"prompt": "p", "completion": "c"}',
    "ner": '{"text": "to Oslo", "entities": [{"start": 3, "end": 7, "label": "city"}]}',
}
# A second good row of another label, so a classification file has the two labels it needs.
SECOND = {**GOOD, "classification": '{"text": "fine", "label": "b"}'}


def _file(tmp_path: Path, *lines: str | bytes) -> Path:
    path = tmp_path / "data.jsonl"
    path.write_bytes(b"\n".join(line if isinstance(line, bytes) else line.encode() for line in lines) + b"\n")
    return path


@pytest.mark.parametrize(("task_type", "bad", "words"), [
    ("classification", '{"text": "x", "label": "a"', "not valid JSON"),
    ("classification", '["text", "label"]', "expected a JSON object, got a list"),
    ("classification", '"just text"', "expected a JSON object, got a string"),
    ("classification", '{"label": "a"}', "missing field 'text'"),
    ("classification", '{"text": 3, "label": "a"}', "'text' must be a string, got a number"),
    ("classification", '{"text": "  ", "label": "a"}', "'text' is empty"),
    ("classification", '{"text": "x"}', "missing field 'label'"),
    ("classification", '{"text": "x", "label": true}', "'label' must be a string (or an integer), got a boolean"),
    ("classification", '{"text": "x", "label": 1.5}', "'label' must be a string (or an integer), got a number"),
    ("classification", '{"text": "x", "label": ""}', "'label' is empty"),
    ("regression", '{"text": "x"}', "missing field 'value'"),
    ("regression", '{"text": "x", "value": "0.5"}', "'value' must be a number, got a string"),
    ("regression", '{"text": "x", "value": false}', "'value' must be a number, got a boolean"),
    ("regression", '{"text": "x", "value": NaN}', "'value' must be a finite number"),
    ("regression", '{"text": "x", "value": Infinity}', "'value' must be a finite number"),
    ("regression", '{"text": "x", "value": 1' + "0" * 400 + "}", "'value' must be a finite number"),
    ("text-generation", '{"text": "x"}', "expected {\"messages\": [...]} or {\"prompt\": ..., \"completion\": ...}"),
    ("text-generation", '{"prompt": "x"}', "missing field 'completion'"),
    ("text-generation", '{"prompt": "x", "completion": null}', "'completion' must be a string, got null"),
    ("text-generation", '{"messages": "hi"}', "'messages' must be a list"),
    ("text-generation", '{"messages": []}', "'messages' is empty"),
    ("text-generation", '{"messages": ["hi"]}', "messages[0] must be an object with 'role' and 'content'"),
    ("text-generation", '{"messages": [{"role": "user"}]}', "missing field 'content' in messages[0]"),
    ("text-generation", '{"messages": [{"role": "user", "content": 1}]}',
     "'content' in messages[0] must be a string, got a number"),
    ("text-generation", '{"messages": [{"role": "", "content": "x"}]}', "'role' in messages[0] is empty"),
    ("text-generation", '{"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "q"}]}',
     "the last message must be the assistant's reply (role 'assistant'), not 'user'"),
    ("text-generation", '{"messages": [{"role": "assistant", "content": "a"}]}', "at least one message before it"),
    ("ner", '{"text": "Oslo"}', "missing field 'entities'"),
    ("ner", '{"text": "Oslo", "entities": {}}', "'entities' must be a list"),
    ("ner", '{"text": "Oslo", "entities": ["city"]}', "entities[0] must be an object"),
    ("ner", '{"text": "Oslo", "entities": [{"end": 4, "label": "city"}]}', "missing field 'start' in entities[0]"),
    ("ner", '{"text": "Oslo", "entities": [{"start": -1, "end": 4, "label": "city"}]}', "'start' in entities[0]"),
    ("ner", '{"text": "Oslo", "entities": [{"start": true, "end": 4, "label": "city"}]}', "'start' in entities[0]"),
    ("ner", '{"text": "Oslo", "entities": [{"start": 0, "end": 5, "label": "city"}]}', "the text has 4 characters"),
    ("ner", '{"text": "Oslo", "entities": [{"start": 2, "end": 2, "label": "city"}]}', "start must be less"),
    ("ner", '{"text": "Oslo", "entities": [{"start": 0, "end": 4}]}', "missing field 'label' in entities[0]"),
    ("ner", '{"text": "Oslo", "entities": [{"start": 0, "end": 4, "label": "O"}]}', "cannot name an entity type"),
    ("ner", '{"text": "Oslo", "entities": [{"start": 0, "end": 4, "label": "B-city"}]}', "read as tags"),
    ("ner", '{"text": "a  b", "entities": [{"start": 1, "end": 3, "label": "city"}]}', "only whitespace"),
    ("ner", '{"text": "Oslo Rome", "entities": [{"start": 5, "end": 9, "label": "city"}, '
            '{"start": 0, "end": 6, "label": "city"}]}', "characters 0-6 and 5-9 overlap"),
])
def test_each_bad_row_is_refused_with_its_line(tmp_path: Path, task_type: str, bad: str, words: str) -> None:
    # Line 3 is the bad one; the blank line 2 still counts.
    path = _file(tmp_path, GOOD[task_type], "", bad, SECOND[task_type])
    with pytest.raises(DatasetError) as caught:
        read_examples(task_type, path, split_name="test")
    assert str(caught.value).startswith("test line 3: ")
    assert words in str(caught.value)


def test_bytes_that_are_not_utf8_name_their_line(tmp_path: Path) -> None:
    path = _file(tmp_path, GOOD["regression"], b'{"text": "\xff", "value": 1}')
    with pytest.raises(DatasetError, match=r"^train line 2: not valid UTF-8 text$"):
        read_examples("regression", path)


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_a_file_without_rows_is_refused(tmp_path: Path, content: str) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text(content)
    with pytest.raises(DatasetError, match="the train dataset has no rows"):
        read_examples("classification", path)


def test_missing_file_and_unknown_task_type(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="the test dataset cannot be read"):
        read_examples("regression", tmp_path / "absent.jsonl", split_name="test")
    with pytest.raises(DatasetError, match="task type 'embedding' cannot be fine-tuned here"):
        read_examples("embedding", _file(tmp_path, GOOD["regression"]))


def test_a_classifier_needs_two_labels_to_train(tmp_path: Path) -> None:
    path = _file(tmp_path, GOOD["classification"], GOOD["classification"])
    with pytest.raises(DatasetError, match=r"only one label \('a'\)"):
        read_examples("classification", path)
    assert len(read_examples("classification", path, split_name="test")) == 2  # a test file may


def test_rows_are_read_with_their_lines(tmp_path: Path) -> None:
    chat = {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"},
                         {"role": "assistant", "content": "a", "name": "bot"}], "id": 7}
    path = _file(tmp_path, "", json.dumps(chat), '{"prompt": "p", "completion": "c", "extra": 1}')
    assert read_examples("text-generation", path) == [
        ChatExample(2, chat["messages"]), CompletionExample(3, "p", "c"),
    ]
    path = _file(tmp_path, '{"text": "x", "label": 3}', '{"text": "y", "label": "b"}')
    examples = read_examples("classification", path)
    assert examples == [ClassificationExample(1, "x", "3"), ClassificationExample(2, "y", "b")]
    assert label_names(examples) == ["3", "b"]
    path = _file(tmp_path, '{"text": "x", "value": 2}')
    assert read_examples("regression", path) == [RegressionExample(1, "x", 2.0)]


def test_ner_rows_are_read_with_their_entities_in_order(tmp_path: Path) -> None:
    row = {"text": "Ada met Bob in Oslo", "entities": [{"start": 15, "end": 19, "label": "city"},
                                                      {"start": 0, "end": 3, "label": "person"},
                                                      {"start": 8, "end": 11, "label": "person"}]}
    path = _file(tmp_path, json.dumps(row), '{"text": "nothing here", "entities": []}')
    examples = read_examples("ner", path)
    assert examples == [
        NerExample(1, row["text"], (EntitySpan(0, 3, "person"), EntitySpan(8, 11, "person"), EntitySpan(15, 19, "city"))),
        NerExample(2, "nothing here", ()),
    ]
    assert label_names(examples) == ["city", "person"]
    with pytest.raises(DatasetError, match=r"^test line 1: label 'person' does not appear in the training data$"):
        check_test_labels([NerExample(1, "Oslo", (EntitySpan(0, 4, "city"),))], examples, split_name="test")
    # Training needs something to learn; a test file may mark nothing.
    empty = _file(tmp_path, '{"text": "nothing here", "entities": []}')
    with pytest.raises(DatasetError, match="marks no entities"):
        read_examples("ner", empty)
    assert len(read_examples("ner", empty, split_name="test")) == 1


def test_a_byte_order_mark_is_not_part_of_the_first_row(tmp_path: Path) -> None:
    path = _file(tmp_path, b"\xef\xbb\xbf" + GOOD["regression"].encode())
    assert read_examples("regression", path) == [RegressionExample(1, "fine", 0.5)]


def test_unseen_test_label_is_refused_with_its_line() -> None:
    train = [ClassificationExample(1, "x", "a"), ClassificationExample(2, "y", "b")]
    test = [ClassificationExample(1, "x", "b"), ClassificationExample(4, "z", "c")]
    with pytest.raises(DatasetError, match=r"^test line 4: label 'c' does not appear in the training data$"):
        check_test_labels(train, test)
    check_test_labels(train, test[:1])
    check_test_labels([RegressionExample(1, "x", 1.0)], [RegressionExample(1, "y", 2.0)])  # no labels: nothing to check


def _rows(labels: str) -> list[ClassificationExample]:
    return [ClassificationExample(i + 1, f"t{i}", label) for i, label in enumerate(labels)]


def test_split_is_deterministic_and_keeps_file_order() -> None:
    examples = _rows("ab" * 50)
    first = split_examples(examples, 0.2, seed=1)
    assert first == split_examples(examples, 0.2, seed=1)
    assert first != split_examples(examples, 0.2, seed=2)
    train, test = first
    assert len(test) == 20 and len(train) == 80
    assert sorted(train + test, key=lambda e: e.line) == examples
    assert [e.line for e in train] == sorted(e.line for e in train)
    assert [e.line for e in test] == sorted(e.line for e in test)


def test_split_keeps_a_training_row_for_every_label() -> None:
    examples = _rows("aaaaaaabc")  # b and c have one row each: neither can be held out
    for seed in range(20):
        train, test = split_examples(examples, 0.5, seed)
        assert {e.label for e in train} == {"a", "b", "c"}
        assert {e.label for e in test} == {"a"}
        check_test_labels(train, test)


def test_split_rounds_the_test_side_up_and_refuses_empty_sides() -> None:
    regression = [RegressionExample(i, "t", float(i)) for i in range(1, 5)]
    train, test = split_examples(regression, 0.1, seed=0)
    assert (len(train), len(test)) == (3, 1)
    ten = [RegressionExample(i, "t", float(i)) for i in range(1, 11)]
    assert [len(side) for side in split_examples(ten, 0.3, seed=0)] == [7, 3]  # not 4: 10 * 0.3 > 3 in floats
    with pytest.raises(DatasetError, match="leaves no training rows"):
        split_examples(regression[:1], 0.2, seed=0)
    with pytest.raises(DatasetError, match="every label has a single training row"):
        split_examples(_rows("abc"), 0.3, seed=0)
    for ratio in (0.0, 1.0, -0.5):
        with pytest.raises(DatasetError, match="between 0 and 1"):
            split_examples(regression, ratio, seed=0)
