"""Turn a growing list of generated tokens into text deltas, honouring stop strings.

Tokens do not map to text one by one: a byte-level BPE token can carry half of a UTF-8 character,
and a SentencePiece token's leading space (or a WordPiece token's ``##``) depends on the token
before it. So each new token is decoded in a window: the tokens since the last complete text,
after the few that came just before them as context, and the new text is what the window adds to
its context's. That keeps a token's cost flat however long the answer grows, where decoding the
whole completion each time made a step of long answers slower with every token (the same text:
the decoder is run with ``clean_up_tokenization_spaces`` off, so a window never rewrites what came
before it; a decoder that did is caught and read whole). Held back from the stream are

  * an incomplete character (the window ends in U+FFFD: its other bytes are still to come), and
  * any tail that could be the beginning of a stop string,

so a stream never shows text that a later token would change or that a stop string cuts off.
"""

from __future__ import annotations

from collections.abc import Callable

REPLACEMENT_CHAR = "\ufffd"


class TextAccumulator:
    def __init__(self, decode: Callable[[list[int]], str], stops: tuple[str, ...] = ()) -> None:
        self._decode = decode
        self._stops = stops
        self._ids: list[int] = []
        # The completion's text read so far; it ends at a complete character until ``finish``.
        self._text = ""
        # The decoding window: ids[_context:_read] were read last time (the next token's context);
        # ids[_read:] are not read yet.
        self._context = 0
        self._read = 0
        # Set for a decoder that does not decode a window as it decodes the whole: then it is whole.
        self._whole = False
        self._emitted = 0
        self.stopped = False

    @property
    def text(self) -> str:
        """Everything emitted so far."""
        return self._text[: self._emitted]

    def add(self, token_id: int, *, check_stops: bool = True) -> str:
        """Add one token; return the text that is now safe to show (may be empty).

        After a stop string appears, ``stopped`` is True and the text ends just before it. With
        ``check_stops`` false (the request's minimum length is not reached yet) stop strings are
        ordinary text.
        """
        self._ids.append(token_id)
        self._read_new_tokens()
        if not check_stops:
            return self._emit_until(len(self._text) - self._incomplete_tail())
        cut = self._find_stop()
        if cut is not None:
            self.stopped = True
            return self._emit_until(cut)
        safe = len(self._text) - self._held_back()
        return self._emit_until(safe)

    def finish(self) -> str:
        """The generation ended for another reason: release whatever was held back."""
        if self.stopped:
            return ""
        self._read_new_tokens(final=True)
        return self._emit_until(len(self._text))

    def _read_new_tokens(self, final: bool = False) -> None:
        """Add the unread tokens' text to ``_text`` once it is complete (or ``final``)."""
        if self._whole:
            self._text = self._decode(self._ids)
            return
        context = self._decode(self._ids[self._context:self._read]) if self._read > self._context else ""
        window = self._decode(self._ids[self._context:])
        if not window.startswith(context):  # a decoder whose window rewrote its context: read whole
            self._whole = True
            self._text = self._decode(self._ids)
            return
        if len(window) > len(context) and (final or not window.endswith(REPLACEMENT_CHAR)):
            self._text += window[len(context):]
            self._context, self._read = self._read, len(self._ids)

    def _emit_until(self, end: int) -> str:
        if end <= self._emitted:
            return ""
        delta = self._text[self._emitted : end]
        self._emitted = end
        return delta

    def _find_stop(self) -> int | None:
        best: int | None = None
        for stop in self._stops:
            # Emitted text never holds a whole stop string, so a match must end past it.
            start = max(0, self._emitted - len(stop) + 1)
            at = self._text.find(stop, start)
            if at != -1 and (best is None or at < best):
                best = at
        return best

    def _incomplete_tail(self) -> int:
        return len(self._text) - len(self._text.rstrip(REPLACEMENT_CHAR))

    def _held_back(self) -> int:
        text = self._text
        hold = self._incomplete_tail()
        for stop in self._stops:
            for k in range(min(len(stop) - 1, len(text)), 0, -1):
                if text.endswith(stop[:k]):
                    hold = max(hold, k)
                    break
        return hold
