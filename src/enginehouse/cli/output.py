"""Printing: exact JSON for scripts, rich tables and key/value views for people.

Consoles are made per call rather than at import, so they pick up the current stdout and terminal
width (tests swap stdout; ``COLUMNS`` is read when a Console is created).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import typer
from rich import box
from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

EMPTY = "-"


def stdout() -> Console:
    return Console(highlight=False)


def print_json(data: Any) -> None:
    # Plain echo, not rich: scripts must get byte-exact JSON with no wrapping or colour codes.
    typer.echo(json.dumps(data, indent=2))


def show(renderable: RenderableType) -> None:
    stdout().print(renderable)


def message(text: str, style: str | None = None) -> None:
    stdout().print(text, style=style, markup=False, soft_wrap=True)


# Columns people copy from (ids, names) are never wrapped: a folded id cannot be pasted back;
# a status is one word that reads badly broken.
WHOLE_COLUMNS = frozenset({"ID", "NAME", "STATUS"})


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None) -> Table:
    # A light frame: tables are read in terminals of 80 columns, where borders cost content.
    view = Table(title=title, title_justify="left", header_style="bold", box=box.SIMPLE_HEAD,
                 show_edge=False, pad_edge=False, collapse_padding=True)
    for column in columns:
        view.add_column(column, overflow="fold", no_wrap=column in WHOLE_COLUMNS)
    for row in rows:
        view.add_row(*(cell(value) for value in row))
    return view


def key_values(pairs: Sequence[tuple[str, Any]], title: str | None = None) -> Table:
    view = Table.grid(padding=(0, 2))
    view.title, view.title_justify = title, "left"
    view.add_column(style="bold")
    view.add_column(overflow="fold")
    for key, value in pairs:
        view.add_row(key, cell(value))
    return view


def cell(value: Any) -> RenderableType:
    """One value as table text; never markup, since names and reasons come from users."""
    if isinstance(value, Text):
        return value
    if value is None or value == "" or value == {} or value == []:
        return Text(EMPTY, style="dim")
    if isinstance(value, (dict, list)):
        return Text(json.dumps(value, separators=(", ", ": ")))
    return Text(str(value))


def when(timestamp: str | None) -> str | None:
    """``2026-01-02T03:04:05.123456Z`` → ``2026-01-02 03:04:05`` (UTC), short enough for a table."""
    return timestamp[:19].replace("T", " ") if timestamp else None


STATUS_STYLES = {
    "Active": "green", "Deployed": "green", "Success": "green", "ready": "green",
    "Failed": "red", "failed": "red",
    "Inactive": "dim", "Deactivated": "dim", "Cancelled": "dim",
}


def status_text(status: str | None) -> Text:
    if not status:
        return Text(EMPTY, style="dim")
    return Text(status, style=STATUS_STYLES.get(status, "yellow"))
