"""What can go wrong in a command, and the one place it becomes a red message and exit code 1.

Commands raise ``CliError`` (or let the API client raise ``ApiError``); ``reporting_errors``
turns either into a message on stderr, so a user never sees a traceback for an expected failure.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console


class CliError(Exception):
    """A failure the user can act on; ``message`` is shown as is."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ApiError(CliError):
    """The server answered with an error envelope; ``status`` lets callers treat 404 as 'gone'."""

    def __init__(self, message: str, status: int, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def print_error(message: str) -> None:
    # markup=False: server messages may hold brackets (``checkpoints[0].path``) that rich would
    # read as markup; soft_wrap keeps long messages on one line for grep and tests.
    Console(stderr=True).print(
        f"error: {message}", style="bold red", markup=False, highlight=False, soft_wrap=True
    )


@contextmanager
def reporting_errors() -> Iterator[None]:
    try:
        yield
    except CliError as exc:
        print_error(exc.message)
        raise typer.Exit(1) from None
