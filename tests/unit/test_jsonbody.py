"""The raw-body checks that run before any JSON is parsed: nesting depth and lone surrogates,
each against what Python's own parser makes of the same bytes."""

from __future__ import annotations

import json

import pytest

from enginehouse.jsonbody import json_problem, lone_surrogate, nesting_depth, too_deep


def _parsed_depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max((_parsed_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_parsed_depth(v) for v in value), default=0)
    return 0


@pytest.mark.parametrize("text", [
    "{}",
    '"just a string"',
    '{"a": [1, [2, {"b": "[[[[{{{{"}]]}',
    '{"quote": "a \\" [[[ still inside", "x": [[[]]]}',
    '{"backslash": "ends with \\\\", "x": [[]]}',
    '["\\\\\\"[[[", [[{"k": "]]]]"}]]]',
    '{"messages": [{"role": "user", "content": [{"type": "text", "text": "{[()]}"}]}]}',
])
def test_depth_matches_the_parsed_value(text: str) -> None:
    assert nesting_depth(text.encode()) == _parsed_depth(json.loads(text))


def test_depth_is_found_across_scan_chunks() -> None:
    # Long enough that the structure is scanned in several chunks, with a string spanning a cut.
    body = ("[" * 40 + '"' + "]" * (1 << 20) + '"' + "]" * 40).encode()
    assert nesting_depth(body) == 40
    assert not too_deep(body, 40) and too_deep(body, 39)


def test_many_shallow_brackets_are_not_too_deep() -> None:
    body = json.dumps({"model": "m", "input": [[1, 2, 3]] * 5000}).encode()
    assert not too_deep(body, 8)
    assert too_deep(b'{"input": ' + b"[" * 1000 + b"]" * 1000 + b"}", 64)


@pytest.mark.parametrize(("text", "lone"), [
    ('"hi \\ud800"', "\\ud800"),
    ('"\\udc00 at the start"', "\\udc00"),
    ('"a high without its low \\uD83D x"', "\\uD83D"),
    ('"two highs \\ud83d\\ud83d\\ude00"', "\\ud83d"),
    ('"an escaped backslash, then a real escape \\\\\\ud800"', "\\ud800"),
    ('"a high, a literal backslash, a low \\ud83d\\\\\\ude00"', "\\ud83d"),
])
def test_lone_surrogates_are_found(text: str, lone: str) -> None:
    assert lone_surrogate(text.encode()) == lone
    assert isinstance(json.loads(text), str)  # Python's parser takes it, hence this check


@pytest.mark.parametrize("text", [
    '"plain text"',
    '"an emoji \\ud83d\\ude00 as a pair, twice \\uD83D\\uDE00"',
    '"an escaped backslash then letters \\\\ud800"',
    '"\\u00e9t\\u00e9"',
])
def test_valid_text_has_no_lone_surrogate(text: str) -> None:
    assert lone_surrogate(text.encode()) is None
    json.loads(text).encode("utf-8")  # and it is valid Unicode indeed


def test_problems_name_what_is_wrong() -> None:
    deep = json_problem(b"[" * 100 + b"]" * 100, 64)
    assert deep is not None and deep.status_code == 400 and "64 levels" in deep.message
    surrogate = json_problem(b'{"input": "\\ud800"}', 64)
    assert surrogate is not None and "\\ud800" in surrogate.message and surrogate.code == "invalid_unicode"
    utf16 = json_problem('{"input": "x"}'.encode("utf-16"), 64)
    assert utf16 is not None and "UTF-8" in utf16.message
    assert json_problem(b'{"model": "m", "input": "fine \\ud83d\\ude00"}', 64) is None
