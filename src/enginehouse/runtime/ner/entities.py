"""Grouping per-token labels into entities with character offsets (pure; unit-tested).

1. Tokens → words: a word-piece continuation token (same word index as the token before it)
   joins its word, and the word takes the label of its first token, so an entity never starts or
   ends inside a word. Special tokens and tokens with no characters are skipped.
2. Words → entities. Labels are read as IOB2/BIO (``B-PER``, ``I-PER``), BIOES/BILOU
   (``E-``/``L-`` ends an entity, ``S-``/``U-`` is a one-word entity), or plain (``PER``); ``O``
   is outside. A word continues the open entity when it has the same type and is not a ``B-``
   (or ``S-``/``U-``); otherwise it starts a new one. An ``I-`` with nothing to continue starts
   an entity too (what IOB1 data and imperfect models produce).
3. An entity spans its first word's start to its last word's end (surrounding whitespace
   trimmed) and ``text`` is exactly ``input[start:end]``. Its ``score`` is the mean of its tokens'
   top probabilities.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

_BEGIN_TAGS = {"B", "S", "U"}
_END_TAGS = {"E", "L", "S", "U"}
_TAGS = {"B", "I", "E", "L", "S", "U"}


@dataclass(frozen=True)
class Entity:
    text: str
    label: str
    start: int
    end: int
    score: float


@dataclass
class _Span:
    label: str
    start: int
    end: int
    scores: list[float] = field(default_factory=list)


def parse_label(label: str) -> tuple[str | None, str | None]:
    """(tag, entity type): ``("B", "PER")`` for ``B-PER``, ``(None, "PER")`` for a plain
    ``PER``, ``(None, None)`` for outside (``O``)."""
    if label in ("O", "", "0"):
        return None, None
    if len(label) > 2 and label[0] in _TAGS and label[1] in "-_":
        return label[0], label[2:]
    return None, label


def group_entities(
    text: str,
    labels: Sequence[str],
    scores: Sequence[float],
    offsets: Sequence[tuple[int, int]],
    word_ids: Sequence[int | None],
    special: Sequence[int],
) -> list[Entity]:
    """Per-token ``labels`` (the argmax label's name) and ``scores`` (its probability) → entities."""
    entities: list[_Span] = []
    current: _Span | None = None
    for word in _words(labels, scores, offsets, word_ids, special):
        tag, kind = parse_label(word.label)
        if kind is None:
            current = None
            continue
        if current is not None and current.label == kind and tag not in _BEGIN_TAGS:
            current.end = word.end
            current.scores.extend(word.scores)
        else:
            current = _Span(kind, word.start, word.end, list(word.scores))
            entities.append(current)
        if tag in _END_TAGS:
            current = None
    return [entity for span in entities if (entity := _finish(text, span)) is not None]


def _words(
    labels: Sequence[str],
    scores: Sequence[float],
    offsets: Sequence[tuple[int, int]],
    word_ids: Sequence[int | None],
    special: Sequence[int],
) -> list[_Span]:
    """One span per word, labelled by its first token, with every token's score."""
    words: list[_Span] = []
    previous: int | None = None
    for i, (start, end) in enumerate(offsets):
        word = word_ids[i]
        if special[i] or word is None or end <= start:
            previous = None
            continue
        if words and word == previous:
            words[-1].end = max(words[-1].end, end)
            words[-1].scores.append(float(scores[i]))
        else:
            words.append(_Span(labels[i], start, end, [float(scores[i])]))
        previous = word
    return words


def trim(text: str, start: int, end: int) -> tuple[int, int]:
    """``text[start:end]`` without the whitespace around it (``start == end`` when nothing is left)."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _finish(text: str, span: _Span) -> Entity | None:
    # Some tokenizers count the space before a word into its first token (byte-level BPE).
    start, end = trim(text, span.start, span.end)
    if start == end:
        return None
    return Entity(text[start:end], span.label, start, end, sum(span.scores) / len(span.scores))
