"""``enginehouse up``: the whole server in the foreground."""

from __future__ import annotations

from typing import Annotated

import typer

from enginehouse.cli.config import cli_settings
from enginehouse.cli.errors import CliError, reporting_errors
from enginehouse.cli.params import DataDirOption

HostOption = Annotated[
    str | None,
    typer.Option("--host", show_default=False, help="Listen address (env: ENGINEHOUSE_HOST)"),
]
PortOption = Annotated[
    int | None,
    typer.Option("--port", min=1, max=65535, show_default=False,
                 help="Listen port (env: ENGINEHOUSE_PORT)"),
]
DemoOption = Annotated[
    bool, typer.Option("--demo", help="Also set up the demo, once, in the background: embeddings and a "
                                     "fine-tuned classifier on all-MiniLM-L6-v2, and text generation.")
]


def up(
    host: HostOption = None, port: PortOption = None, data_dir: DataDirOption = None,
    demo: DemoOption = False,
) -> None:
    """Run the API, gateway, dashboard, reconciler and replicas until interrupted."""
    with reporting_errors():
        settings = cli_settings(host=host, port=port, data_dir=data_dir)
        # Imported here: the server pulls in FastAPI and the whole control plane, which every
        # other command would otherwise pay for at start-up.
        from enginehouse import server
        from enginehouse.reconciler.leadership import AnotherServerError

        try:
            server.serve(settings, demo=demo)
        except AnotherServerError as exc:  # raised before uvicorn starts: one line, exit 1
            raise CliError(str(exc)) from None
