"""``--wait``: poll an object until it settles, with a live status line on stderr.

Settling is decided by the caller (engine and deployment have different end states); a fetch
answering None means the object is gone (404), which is how a delete settles.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from rich.console import Console, RenderableType
from rich.live import Live
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from enginehouse.cli.errors import ApiError, CliError

Obj = dict[str, Any]
POLL_INTERVAL_S = 0.5

ENGINE_SETTLED = frozenset({"Active", "Inactive", "Failed"})
DEPLOYMENT_SETTLED = frozenset({"Deployed", "Deactivated", "Failed"})


def fetch_or_none(fetch: Callable[[], Obj]) -> Callable[[], Obj | None]:
    """Wrap a GET so that 404 reads as 'gone' rather than an error."""

    def fetched() -> Obj | None:
        try:
            return fetch()
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    return fetched


def settles_at(statuses: frozenset[str]) -> Callable[[Obj | None], bool]:
    return lambda obj: obj is None or obj.get("status") in statuses


def gone(obj: Obj | None) -> bool:
    return obj is None


class _View(Protocol):
    def update(self, renderable: RenderableType) -> None: ...


class _Silent:
    def update(self, renderable: RenderableType) -> None:
        pass


@contextmanager
def _live(enabled: bool) -> Iterator[_View]:
    if not enabled:
        yield _Silent()
        return
    # stderr, and transient: stdout stays for the result, the status line vanishes once settled.
    with Live(console=Console(stderr=True), transient=True, refresh_per_second=8) as live:
        yield live


def _status_line(label: str, obj: Obj | None, elapsed: float) -> RenderableType:
    text = Text(f"{label}: ")
    if obj is None:
        text.append("gone", style="bold")
    else:
        text.append(str(obj.get("status")), style="bold yellow")
        if obj.get("status_reason"):
            text.append(f" ({obj['status_reason']})", style="dim")
    text.append(f"  {elapsed:.0f}s", style="dim")
    line = Table.grid(padding=(0, 1))
    line.add_row(Spinner("dots"), text)
    return line


def wait_until(
    fetch: Callable[[], Obj | None],
    settled: Callable[[Obj | None], bool],
    label: str,
    *,
    timeout: float,
    live: bool = True,
    interval: float = POLL_INTERVAL_S,
) -> Obj | None:
    """Poll ``fetch`` until ``settled``; the last state seen. CliError on timeout."""
    started = time.monotonic()
    current = fetch()
    with _live(live) as view:
        while not settled(current):
            elapsed = time.monotonic() - started
            if elapsed >= timeout:
                status = "gone" if current is None else current.get("status")
                raise CliError(
                    f"gave up waiting for {label} after {timeout:g}s (status: {status}); "
                    "the server carries on, so check again later"
                )
            view.update(_status_line(label, current, elapsed))
            time.sleep(interval)
            current = fetch()
    return current
