"""Options shared by many commands, declared once so their names and help stay consistent.

Flags default to None so that "not given" falls through to ``Settings`` (the ENGINEHOUSE_*
variables); the CLI never reads the environment itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from enginehouse.core.model_names import kept_model_name

UrlOption = Annotated[
    str | None,
    typer.Option("--url", show_default=False,
                 help="Server address (env: ENGINEHOUSE_URL; default http://127.0.0.1:8400)"),
]
ApiKeyOption = Annotated[
    str | None,
    typer.Option("--api-key", help="API key (env: ENGINEHOUSE_API_KEY; else <data-dir>/admin.key)",
                 show_default=False),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print the API's JSON only (for scripts).")
]
WaitOption = Annotated[
    bool, typer.Option("--wait", help="Show a live status view until the object settles.")
]
TimeoutOption = Annotated[
    float, typer.Option("--timeout", min=0, help="Seconds --wait waits before giving up.")
]
LimitOption = Annotated[
    int | None,
    typer.Option("--limit", min=1, show_default=False,
                 help="Show at most this many, newest first (default: all of them)."),
]
DataDirOption = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Server data directory (env: ENGINEHOUSE_DATA_DIR)",
                 show_default=False),
]

DEFAULT_TIMEOUT_S = 600.0


def base_model_name(value: str) -> str:
    """A ``--base-model`` as the server should read it. A relative path (``./x``, ``../x``, or a
    directory that exists here, as a model loader would take it) is made absolute against the
    caller's working directory, by the server's own rule (``kept_model_name``): the server would
    resolve it against its own. An absolute path, a ``~`` path and a Hub id go as given, for the
    server to read on its own machine."""
    return value if value.startswith(("/", "~")) else kept_model_name(value)
