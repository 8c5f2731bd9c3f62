"""Calling out to what may hang or fail: ``within`` bounds the wait for an answer, and
``first_line`` is the one line a failure is told in (a log line, a status reason)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def within(timeout_s: float, work: Callable[[], T], name: str = "deadline") -> T | None:
    """``work()``'s answer, or None after ``timeout_s``; what ``work`` raises is raised here.
    It runs in a daemon thread named ``name``: a call that hangs past its own time-outs (name
    resolution ignores an HTTP client's) is left behind rather than holding up its caller or
    the process's exit."""
    answers: queue.Queue[tuple[bool, object]] = queue.Queue(maxsize=1)

    def run() -> None:
        try:
            answers.put((True, work()))
        except BaseException as exc:  # handed to the caller, if it still waits
            answers.put((False, exc))

    threading.Thread(target=run, daemon=True, name=name).start()
    try:
        done, value = answers.get(timeout=timeout_s)
    except queue.Empty:
        return None
    if not done:
        assert isinstance(value, BaseException)
        raise value
    return value  # type: ignore[return-value]


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type's name when it has none."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
