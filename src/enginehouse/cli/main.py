"""The ``enginehouse`` command: wiring of the sub-commands (console script ``enginehouse``)."""

from __future__ import annotations

from typing import Annotated

import typer

from enginehouse import __version__
from enginehouse.cli import admin, datasets, deployments, engines, experiments, jobs
from enginehouse.cli.up import up

app = typer.Typer(
    name="enginehouse",
    help="Serve fine-tuned models: engines, deployments, training jobs, datasets.",
    no_args_is_help=True,
    # A traceback's locals could hold an API key; never print them.
    pretty_exceptions_show_locals=False,
)

app.command("up")(up)
app.command("deploy")(deployments.deploy)
app.add_typer(engines.app, name="engines")
app.add_typer(deployments.app, name="deployments")
app.add_typer(jobs.app, name="jobs")
app.add_typer(datasets.app, name="datasets")
app.add_typer(experiments.app, name="experiments")
app.add_typer(admin.orgs_app, name="orgs")
app.add_typer(admin.keys_app, name="keys")


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"enginehouse {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """enginehouse: self-hosted serving of fine-tuned models."""
