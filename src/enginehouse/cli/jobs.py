"""``enginehouse jobs register|list|show``: training jobs whose checkpoints already exist."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from enginehouse.cli import render
from enginehouse.cli.config import connect
from enginehouse.cli.listing import fetch_list, print_list
from enginehouse.cli.output import print_json, show
from enginehouse.cli.params import ApiKeyOption, JsonOption, LimitOption, UrlOption
from enginehouse.cli.resolve import TRAINING_JOB, find

app = typer.Typer(help="Training jobs: registered fine-tuning checkpoints.", no_args_is_help=True)


def parse_checkpoint(value: str) -> dict[str, Any]:
    """``3=./out/epoch-3`` → checkpoint 3 at an absolute path.

    The path is made absolute here because the server resolves relative paths against its own
    working directory, which is rarely the user's.
    """
    number, separator, path = value.partition("=")
    if not separator or not path or not number.strip().isdigit() or int(number) < 1:
        raise typer.BadParameter(f"{value!r} is not N=PATH (N the epoch, 1 or more)",
                                 param_hint="--checkpoint")
    return {"checkpoint": int(number), "path": str(Path(path).expanduser().resolve())}


@app.command("register")
def register(
    name: Annotated[str, typer.Option("--name", help="Training job name.")],
    task_type: Annotated[str, typer.Option("--task-type", help="e.g. text-generation.")],
    base_model: Annotated[str, typer.Option("--base-model", help="The model it was tuned from.")],
    checkpoints: Annotated[
        list[str], typer.Option("--checkpoint", metavar="N=PATH",
                                help="Epoch and checkpoint directory; repeat for each.")
    ],
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Register a training job from checkpoint directories on the server's disk."""
    body = {
        "name": name,
        "task_type": task_type,
        "base_model": base_model,
        "checkpoints": [parse_checkpoint(value) for value in checkpoints],
    }
    with connect(url, api_key) as client:
        job = client.post("/v1/training-jobs", body)
    if as_json:
        print_json(job)
    else:
        show(render.job_view(job))


@app.command("list")
def list_jobs(
    limit: LimitOption = None,
    url: UrlOption = None, api_key: ApiKeyOption = None, as_json: JsonOption = False,
) -> None:
    """List the organization's training jobs, newest first."""
    with connect(url, api_key) as client:
        answer = fetch_list(client, TRAINING_JOB.path, limit=limit)
    print_list(answer, as_json, "training job", render.jobs_table)


@app.command("show")
def show_job(
    job: Annotated[str, typer.Argument(metavar="ID_OR_NAME", help="Training job id or name.")],
    url: UrlOption = None, api_key: ApiKeyOption = None, as_json: JsonOption = False,
) -> None:
    """Show one training job and its checkpoints."""
    with connect(url, api_key) as client:
        found = find(client, TRAINING_JOB, job)
    if as_json:
        print_json(found)
    else:
        show(render.job_view(found))
