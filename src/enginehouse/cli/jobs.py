"""``enginehouse jobs create|register|list|show|logs|cancel``: fine-tuning jobs, and training
jobs whose checkpoints already exist."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console, RenderableType
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from enginehouse.cli import render
from enginehouse.cli.client import ApiClient
from enginehouse.cli.config import connect
from enginehouse.cli.errors import CliError
from enginehouse.cli.listing import fetch_list, print_list
from enginehouse.cli.output import print_json, show
from enginehouse.cli.params import ApiKeyOption, JsonOption, LimitOption, UrlOption, base_model_name
from enginehouse.cli.resolve import DATASET, TRAINING_JOB, find, find_id

app = typer.Typer(help="Training jobs: fine-tunes, and registered checkpoints.", no_args_is_help=True)

JobArgument = Annotated[str, typer.Argument(metavar="ID_OR_NAME", help="Training job id or name.")]
# The states a training job (and so an experiment's version) ends in.
ENDED = frozenset({"Success", "Failed", "Cancelled"})
POLL_S = 1.0


def parse_parameter(value: str) -> tuple[str, Any]:
    """``learning_rate=1e-4`` → ("learning_rate", 0.0001); a value that is not JSON stays text."""
    key, separator, text = value.partition("=")
    if not separator or not key.strip():
        raise typer.BadParameter(f"{value!r} is not KEY=VALUE", param_hint="--param")
    try:
        return key.strip(), json.loads(text)
    except ValueError:
        return key.strip(), text


def _dataset_id(client: ApiClient, ref: str) -> str:
    """A local JSONL file is uploaded first; anything else names a dataset (id or name)."""
    path = Path(ref).expanduser()
    if path.is_file():
        return str(client.upload(DATASET.path, path, {"name": path.stem})["id"])
    return find_id(client, DATASET, ref)


@app.command("create")
def create(
    name: Annotated[str, typer.Option("--name", help="Training job name.")],
    task_type: Annotated[str, typer.Option("--task-type", help="text-generation, classification, regression or ner.")],
    base_model: Annotated[str, typer.Option("--base-model", help="The model to fine-tune (path or Hub id).")],
    train: Annotated[str, typer.Option("--train", help="A JSONL file (uploaded first) or a dataset id or name.")],
    test: Annotated[str | None, typer.Option("--test", help="The test split, likewise.")] = None,
    split: Annotated[float | None, typer.Option(
        "--split", min=0, max=1, help="Share of the training rows held out for testing (default 0.1).")] = None,
    parameters: Annotated[list[str] | None, typer.Option(
        "--param", metavar="KEY=VALUE", help="A training parameter, e.g. num_train_epochs=2; repeat.")] = None,
    follow: Annotated[bool, typer.Option("--follow", help="Show a live progress bar until the job ends.")] = False,
    url: UrlOption = None, api_key: ApiKeyOption = None, as_json: JsonOption = False,
) -> None:
    """Fine-tune a base model (LoRA) on a dataset; each epoch makes a deployable checkpoint."""
    body: dict[str, Any] = {"name": name, "task_type": task_type, "base_model": base_model_name(base_model)}
    if parameters:
        body["parameters"] = dict(parse_parameter(value) for value in parameters)
    if split is not None:
        body["train_test_split_ratio"] = split
    with connect(url, api_key) as client:
        body["train_dataset_id"] = _dataset_id(client, train)
        if test is not None:
            body["test_dataset_id"] = _dataset_id(client, test)
        job = client.post(TRAINING_JOB.path, body)
        if follow:
            job = _follow(client, job, live=not as_json)
        _finish(job, as_json)


def _follow(client: ApiClient, job: dict[str, Any], live: bool) -> dict[str, Any]:
    """Poll the job until it ends, with a progress bar (on stderr: stdout stays the answer)."""
    columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[detail]}"))
    with Progress(*columns, console=Console(stderr=True), disable=not live) as bar:
        task = bar.add_task(job["name"], total=100, detail="")
        while True:
            detail = job.get("progress_detail") or {}
            loss = detail.get("loss")
            words = f"{job['status']}" + (f" · epoch {detail.get('epoch')}" if detail.get("epoch") is not None else "")
            words += f" · loss {loss:.4g}" if isinstance(loss, (int, float)) else ""
            bar.update(task, completed=job.get("progress") or 0, detail=words)
            if job["status"] in ENDED:
                return job
            time.sleep(POLL_S)
            job = client.get(f"{TRAINING_JOB.path}/{job['id']}")


def _finish(job: dict[str, Any], as_json: bool) -> None:
    failed = job.get("status") == "Failed"
    show_result(job, as_json, render.job_view,
                f"training job {job['name']} failed: {job.get('status_reason')}" if failed else None)


def show_result(obj: dict[str, Any], as_json: bool, view: Callable[[dict[str, Any]], RenderableType],
                failure: str | None) -> None:
    """Print the object (its JSON, or ``view`` of it); then, when ``failure`` says what failed,
    exit 1 with it (the object stays printed, for a script to read)."""
    if as_json:
        print_json(obj)
    else:
        show(view(obj))
    if failure is not None:
        raise CliError(failure)


@app.command("logs")
def logs(
    job: JobArgument,
    tail: Annotated[int, typer.Option("--tail", min=1, max=10000, help="The last lines to show.")] = 200,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines until the job ends.")] = False,
    url: UrlOption = None, api_key: ApiKeyOption = None,
) -> None:
    """Print a training job's log."""
    with connect(url, api_key) as client:
        job_id = find_id(client, TRAINING_JOB, job)
        lines = client.get(f"{TRAINING_JOB.path}/{job_id}/logs", {"tail": str(tail)})["data"]
        for line in lines:
            typer.echo(line)
        printed = len(lines)
        while follow:
            status = client.get(f"{TRAINING_JOB.path}/{job_id}")["status"]
            # The whole recent log each time: new lines are those past what was printed.
            recent = client.get(f"{TRAINING_JOB.path}/{job_id}/logs", {"tail": "10000"})["data"]
            for line in recent[printed - len(recent):] if printed < len(recent) else []:
                typer.echo(line)
            printed = max(printed, len(recent))
            if status in ENDED:
                break
            time.sleep(POLL_S)


@app.command("cancel")
def cancel(
    job: JobArgument, url: UrlOption = None, api_key: ApiKeyOption = None, as_json: JsonOption = False,
) -> None:
    """Stop a queued or running job; the checkpoints it finished stay deployable."""
    with connect(url, api_key) as client:
        job_id = find_id(client, TRAINING_JOB, job)
        answer = client.post(f"{TRAINING_JOB.path}/{job_id}/cancel")
    if as_json:
        print_json(answer)
    else:
        show(render.job_view(answer))


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
        "base_model": base_model_name(base_model),
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
