"""Fine-tuning datasets (SPEC §5.1): JSONL files read and checked row by row, before training.

Everything here is plain Python (no tokenizer, no torch), so the API can check an uploaded file
when a job is created and refuse it with the line that is wrong; the worker reads the same way.
Lengths in tokens need the base model's tokenizer and are checked by the worker.
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from enginehouse.runtime.ner.entities import parse_label

TRAINABLE_TASK_TYPES = ("text-generation", "classification", "regression", "ner")
# The label of the tokens outside any entity.
OUTSIDE_LABEL = "O"
# Why a label cannot name an entity type (``names_entity_type``).
ENTITY_TYPE_RULE = (f"{OUTSIDE_LABEL!r} means outside any entity, and B-/I-/E-/S- prefixes are read as tags; "
                    "no spaces around it")


class DatasetError(ValueError):
    """A dataset that cannot be trained on; the message names the file's line when one is at fault."""


@dataclass(frozen=True)
class ChatExample:
    """A conversation; the last message is the assistant's reply, the one trained on."""

    line: int
    messages: list[dict[str, Any]]


@dataclass(frozen=True)
class CompletionExample:
    line: int
    prompt: str
    completion: str


@dataclass(frozen=True)
class ClassificationExample:
    line: int
    text: str
    label: str


@dataclass(frozen=True)
class RegressionExample:
    line: int
    text: str
    value: float


@dataclass(frozen=True)
class EntitySpan:
    """Characters ``text[start:end]`` of a row are an entity of type ``label``."""

    start: int
    end: int
    label: str


@dataclass(frozen=True)
class NerExample:
    line: int
    text: str
    entities: tuple[EntitySpan, ...]  # in order of their start, never overlapping


Example = ChatExample | CompletionExample | ClassificationExample | RegressionExample | NerExample


class _RowError(ValueError):
    """What is wrong with one row; ``read_examples`` adds the split and line number."""


def read_examples(task_type: str, path: Path, *, split_name: str = "train") -> list[Example]:
    """Every row of the JSONL file at ``path`` as examples of ``task_type``; ``DatasetError`` on the
    first row that does not fit (``"train line 3: …"``). Blank lines are skipped but counted."""
    parse = _PARSERS.get(task_type)
    if parse is None:
        raise DatasetError(
            f"task type {task_type!r} cannot be fine-tuned here; it must be one of {', '.join(TRAINABLE_TASK_TYPES)}"
        )
    examples: list[Example] = []
    for line, text in _lines(path, split_name):
        try:
            examples.append(parse(line, _object(text)))
        except _RowError as exc:
            raise DatasetError(f"{split_name} line {line}: {exc}") from None
    if not examples:
        raise DatasetError(f"the {split_name} dataset has no rows")
    if task_type == "classification" and split_name == "train":
        _check_several_labels(examples)
    if task_type == "ner" and split_name == "train" and not label_names(examples):
        raise DatasetError(f"the {split_name} dataset marks no entities; an NER model needs rows with entities "
                           "to learn from")
    return examples


def check_test_labels(train: Sequence[Example], test: Sequence[Example], *, split_name: str = "test") -> None:
    """A model cannot be scored on a label it never saw: refuse the first test row with one."""
    known = set(label_names(train))
    for example in test:
        for label in _labels_of(example):
            if label not in known:
                raise DatasetError(
                    f"{split_name} line {example.line}: label {label!r} does not appear in the training data"
                )


def split_examples(
    examples: Sequence[Example], ratio: float, seed: int
) -> tuple[list[Example], list[Example]]:
    """Hold out ``ceil(len * ratio)`` rows for testing, chosen by ``seed`` alone. A classification
    row is only held out while its label keeps at least one training row. Both sides keep the
    file's order."""
    if not 0 < ratio < 1:
        raise DatasetError(f"train_test_split_ratio must be between 0 and 1 (exclusive), got {ratio}")
    total = len(examples)
    wanted = math.ceil(round(total * ratio, 9))  # 10 * 0.3 is 3.0000000000000004, which is 3 rows
    if wanted >= total:
        raise DatasetError(
            f"train_test_split_ratio {ratio} of {total} row(s) leaves no training rows; add rows, lower "
            "the ratio or give a test dataset"
        )
    order = list(range(total))
    random.Random(seed).shuffle(order)
    left_in_train = Counter(_label(e) for e in examples)
    held_out: set[int] = set()
    for index in order:
        if len(held_out) == wanted:
            break
        label = _label(examples[index])
        if label is None or left_in_train[label] > 1:
            held_out.add(index)
            left_in_train[label] -= 1
    if not held_out:
        raise DatasetError(
            "every label has a single training row, so none can be held out for testing; add rows or "
            "give a test dataset"
        )
    train = [e for i, e in enumerate(examples) if i not in held_out]
    test = [e for i, e in enumerate(examples) if i in held_out]
    return train, test


def label_names(examples: Sequence[Example]) -> list[str]:
    """A classifier's labels (an NER model's entity types) in a fixed order (sorted), whatever the
    order of the rows."""
    return sorted({label for example in examples for label in _labels_of(example)})


def _labels_of(example: Example) -> list[str]:
    if isinstance(example, ClassificationExample):
        return [example.label]
    if isinstance(example, NerExample):
        return [entity.label for entity in example.entities]
    return []


def _label(example: Example) -> str | None:
    return example.label if isinstance(example, ClassificationExample) else None


def _check_several_labels(examples: list[Example]) -> None:
    labels = label_names(examples)
    if len(labels) < 2:
        raise DatasetError(
            f"the training data has only one label ({labels[0]!r}); a classifier needs at least two"
        )


def _lines(path: Path, split_name: str) -> Iterator[tuple[int, str]]:
    """(line number, text) of each non-blank line, streamed; bytes are decoded per line so a bad
    byte is reported with its line."""
    try:
        with path.open("rb") as handle:
            for number, raw in enumerate(handle, start=1):
                try:
                    text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
                except UnicodeDecodeError:
                    raise DatasetError(f"{split_name} line {number}: not valid UTF-8 text") from None
                if text.strip():
                    yield number, text
    except OSError as exc:
        raise DatasetError(f"the {split_name} dataset cannot be read: {exc.strerror or exc}") from None


def _object(text: str) -> dict[str, Any]:
    try:
        row = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _RowError(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    except RecursionError:
        raise _RowError("not valid JSON (nested too deeply)") from None
    if not isinstance(row, dict):
        raise _RowError(f"expected a JSON object, got {_kind(row)}")
    return row


def _kind(value: object) -> str:
    """A JSON value's type, as a user reading their file would name it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _string(row: dict[str, Any], key: str, *, where: str = "") -> str:
    if key not in row:
        raise _RowError(f"missing field {key!r}{where}")
    value = row[key]
    if not isinstance(value, str):
        raise _RowError(f"{key!r}{where} must be a string, got {_kind(value)}")
    return value


def _text(row: dict[str, Any]) -> str:
    text = _string(row, "text")
    if not text.strip():
        raise _RowError("'text' is empty")
    return text


def _parse_textgen(line: int, row: dict[str, Any]) -> Example:
    if "messages" in row:
        return ChatExample(line, _messages(row["messages"]))
    if "prompt" in row or "completion" in row:
        return CompletionExample(line, _string(row, "prompt"), _string(row, "completion"))
    raise _RowError("expected {\"messages\": [...]} or {\"prompt\": ..., \"completion\": ...}")


def _messages(value: object) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise _RowError(f"'messages' must be a list of {{\"role\", \"content\"}} objects, got {_kind(value)}")
    if not value:
        raise _RowError("'messages' is empty")
    for index, message in enumerate(value):
        where = f" in messages[{index}]"
        if not isinstance(message, dict):
            raise _RowError(f"messages[{index}] must be an object with 'role' and 'content', got {_kind(message)}")
        if not _string(message, "role", where=where):
            raise _RowError(f"'role'{where} is empty")
        _string(message, "content", where=where)
    last = value[-1]["role"]
    if last != "assistant":
        raise _RowError(f"the last message must be the assistant's reply (role 'assistant'), not {last!r}")
    if len(value) < 2:
        raise _RowError("'messages' holds only the assistant's reply; it needs at least one message before it")
    return value


def _parse_classification(line: int, row: dict[str, Any]) -> Example:
    text = _text(row)
    if "label" not in row:
        raise _RowError("missing field 'label'")
    label = row["label"]
    # An integer label is taken as its name ("3"): files exported from pandas often hold those.
    if isinstance(label, int) and not isinstance(label, bool):
        label = str(label)
    if not isinstance(label, str):
        raise _RowError(f"'label' must be a string (or an integer), got {_kind(label)}")
    if not label.strip():
        raise _RowError("'label' is empty")
    return ClassificationExample(line, text, label)


def _parse_regression(line: int, row: dict[str, Any]) -> Example:
    text = _text(row)
    if "value" not in row:
        raise _RowError("missing field 'value'")
    value = row["value"]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _RowError(f"'value' must be a number, got {_kind(value)}")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond any float
        number = math.inf
    # Python's JSON parser accepts NaN and Infinity, which no loss can be computed on.
    if not math.isfinite(number):
        shown = value if isinstance(value, float) else "an integer too large for a number"
        raise _RowError(f"'value' must be a finite number, got {shown}")
    return RegressionExample(line, text, number)


def _parse_ner(line: int, row: dict[str, Any]) -> Example:
    text = _text(row)
    if "entities" not in row:
        raise _RowError("missing field 'entities' (a list of {\"start\", \"end\", \"label\"}; [] for none)")
    value = row["entities"]
    if not isinstance(value, list):
        raise _RowError(f"'entities' must be a list of {{\"start\", \"end\", \"label\"}} objects, got {_kind(value)}")
    return NerExample(line, text, entity_spans(text, value))


def entity_spans(text: str, entities: Sequence[object]) -> tuple[EntitySpan, ...]:
    """The entities of ``text`` as given (objects with character offsets ``start`` ≤ ``end`` and a
    ``label``), checked and sorted; ``ValueError`` names the first that does not fit. Also used by
    the API for an experiment's examples."""
    spans = []
    for index, entity in enumerate(entities):
        where = f"entities[{index}]"
        if not isinstance(entity, dict):
            raise _RowError(f"{where} must be an object with 'start', 'end' and 'label', got {_kind(entity)}")
        start, end = (_offset(entity, key, where) for key in ("start", "end"))
        label = _string(entity, "label", where=f" in {where}")
        if not label.strip():
            raise _RowError(f"'label' in {where} is empty")
        if not names_entity_type(label):
            raise _RowError(f"label {label!r} in {where} cannot name an entity type ({ENTITY_TYPE_RULE})")
        if not start < end <= len(text):
            raise _RowError(f"{where} spans characters {start} to {end}, but the text has {len(text)} characters "
                            "(start must be less than end, and end at most the text's length)")
        if not text[start:end].strip():
            raise _RowError(f"{where} spans only whitespace")
        spans.append(EntitySpan(start, end, label))
    spans.sort(key=lambda span: span.start)
    for before, after in zip(spans, spans[1:]):
        if after.start < before.end:
            raise _RowError(f"entities at characters {before.start}-{before.end} and {after.start}-{after.end} overlap")
    return tuple(spans)


def _offset(entity: dict[str, Any], key: str, where: str) -> int:
    if key not in entity:
        raise _RowError(f"missing field {key!r} in {where}")
    value = entity[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _RowError(f"{key!r} in {where} must be a character offset (an integer, 0 or more), got {value!r}")
    return value


def names_entity_type(label: str) -> bool:
    """Whether a replica reads ``label`` back as the plain entity type it is (``runtime.ner.entities``:
    ``O`` is outside, and in ``B-PER`` the prefix is a tag)."""
    return label == label.strip() and parse_label(label) == (None, label)


_PARSERS = {
    "text-generation": _parse_textgen,
    "classification": _parse_classification,
    "regression": _parse_regression,
    "ner": _parse_ner,
}
