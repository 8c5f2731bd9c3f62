"""Cancellation by SIGTERM: the server stops a job by signalling the worker's process group.

The worker must stop within a second or two, yet never leave a half-written file behind. So,
inside an ``armed()`` block (the job itself), the signal handler raises ``Cancelled`` wherever the
worker is: between two tensor operations of a step, in the middle of loading a model. Inside a
``protected()`` block (writing a checkpoint or a report file) it only records the request, which
the block raises on its way out. Outside ``armed()`` (reporting the outcome) it only records.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

# The exit status of a cancelled worker: what a shell reports for a process ended by SIGTERM.
EXIT_CANCELLED = 128 + signal.SIGTERM


class Cancelled(BaseException):
    """Raised where the worker is when it is cancelled. A BaseException, like KeyboardInterrupt,
    so that library code catching ``Exception`` does not swallow it."""


class Cancellation:
    def __init__(self) -> None:
        self.requested = False
        self._armed = False
        self._protected = 0

    def install(self) -> None:
        """Handle SIGTERM (the server's cancel) and SIGINT (Ctrl-C) from now on; main thread only."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def check(self) -> None:
        if self.requested and self._armed and not self._protected:
            raise Cancelled()

    @contextmanager
    def armed(self) -> Iterator[None]:
        self._armed = True
        try:
            self.check()
            yield
        finally:
            self._armed = False

    @contextmanager
    def protected(self) -> Iterator[None]:
        """A block a cancel must not cut short; a cancel during it takes effect at its end."""
        self._protected += 1
        try:
            yield
        finally:
            self._protected -= 1
        self.check()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        first = not self.requested
        self.requested = True
        # Raised once only: a second signal must not interrupt the unwinding of the first.
        if first:
            self.check()
