"""What a JSON request body must not hold, checked on its raw bytes before anything parses it.

Python's ``json`` accepts bodies that break what comes after it: nesting a thousand levels deep
(the parser, pydantic and every walk over the result recurse once per level, so the request dies
of a ``RecursionError``), and lone UTF-16 surrogate escapes such as ``"\\ud800"``, which decode
to a ``str`` that no tokenizer, database driver or UTF-8 encoder will take. Both are refused
here with a 400 that says what is wrong.

The checks run on every request body of the gateway, so each has a fast path that costs one
C-level scan of the bytes and settles almost every real body; the careful check runs only when
the fast path cannot rule the problem out.
"""

from __future__ import annotations

import re

import numpy as np

from enginehouse.errors import BadRequestError

# Bytes that matter for nesting: quotes (strings hide the brackets inside them) and brackets.
_NOT_STRUCTURE = bytes(set(range(256)) - set(b'"[]{}'))
# Per byte of the reduced text: openers +1, closers -1, quotes 0.
_DEPTH_STEPS = np.zeros(256, dtype=np.int8)
_DEPTH_STEPS[list(b"[{")] = 1
_DEPTH_STEPS[list(b"]}")] = -1
# The reduced text is scanned this many bytes at a time, to bound the scan's memory.
_CHUNK = 1 << 20

# \uD800-\uDFFF: a UTF-16 surrogate, valid only as a high (D800-DBFF) + low (DC00-DFFF) pair.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_SURROGATE_PAIR = re.compile(rb"\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}")


def _without_escaped_quotes_and_backslashes(raw: bytes) -> bytes:
    """``raw`` with every escaped backslash and escaped quote blanked out (same length), so that
    each quote left delimits a string and each backslash left starts an escape. Pairs of
    backslashes go first, left to right, as a JSON parser reads them."""
    return raw.replace(b"\\\\", b"--").replace(b'\\"', b"--")


def too_deep(raw: bytes, max_depth: int) -> bool:
    """True when the JSON text ``raw`` nests arrays and objects more than ``max_depth`` deep."""
    # A text with no more brackets than the limit cannot nest deeper than it: one pass in C
    # settles nearly every real body without looking at its structure.
    if raw.count(b"[") + raw.count(b"{") <= max_depth:
        return False
    return nesting_depth(raw, stop_above=max_depth) > max_depth


def nesting_depth(raw: bytes, stop_above: int | None = None) -> int:
    """The deepest nesting of arrays and objects in the JSON text ``raw`` (brackets inside strings
    do not count); with ``stop_above``, the first depth found above it once one is.

    Linear and vectorised: a body of millions of brackets costs about what parsing it would.
    """
    structure = _without_escaped_quotes_and_backslashes(raw).translate(None, _NOT_STRUCTURE)
    depth = deepest = 0
    in_string = 0
    for start in range(0, len(structure), _CHUNK):
        chunk = np.frombuffer(structure, dtype=np.uint8, count=min(_CHUNK, len(structure) - start), offset=start)
        # A bracket is outside strings when an even number of quotes came before it.
        quotes_so_far = np.cumsum(chunk == 0x22, dtype=np.int64) + in_string
        steps = np.where(quotes_so_far % 2 == 0, _DEPTH_STEPS[chunk], 0)
        levels = np.cumsum(steps, dtype=np.int64) + depth
        deepest = max(deepest, int(levels.max()))
        if stop_above is not None and deepest > stop_above:
            return deepest
        depth, in_string = int(levels[-1]), int(quotes_so_far[-1]) % 2
    return deepest


def lone_surrogate(raw: bytes) -> str | None:
    """The first surrogate escape in ``raw`` that is not half of a pair, as written; else None."""
    if _SURROGATE_ESCAPE.search(raw) is None:  # the fast path: no surrogate escape at all
        return None
    # "\\ud800" is a backslash and the letters "ud800", not an escape; with escaped backslashes
    # blanked out, every "\u" left is an escape, and taking out the pairs leaves the lone ones.
    lone = _SURROGATE_ESCAPE.search(_SURROGATE_PAIR.sub(b"", raw.replace(b"\\\\", b"--")))
    return lone.group().decode() if lone is not None else None


def json_problem(raw: bytes, max_depth: int) -> BadRequestError | None:
    """Why ``raw`` must not be parsed, or None. ``raw`` need not be valid JSON: a body these checks
    let through can still fail to parse, and its parser says so."""
    if b"\x00" in raw:
        # JSON text has no raw NUL byte, except in UTF-16/32, which the checks below cannot read
        # (and which JSON between systems must not use: RFC 8259 asks for UTF-8).
        return BadRequestError(
            "the request body must be JSON encoded as UTF-8 (it holds a NUL byte; write a NUL "
            "character inside a string as \\u0000)", code="invalid_json")
    if too_deep(raw, max_depth):
        return BadRequestError(
            f"the request body nests arrays and objects more than {max_depth} levels deep; "
            "flatten it", code="json_too_deep")
    surrogate = lone_surrogate(raw)
    if surrogate is not None:
        return BadRequestError(
            f"the request body holds a lone UTF-16 surrogate escape ({surrogate}): a surrogate is "
            "only valid as a high + low pair (e.g. \\ud83d\\ude00); send valid Unicode text",
            code="invalid_unicode")
    return None
