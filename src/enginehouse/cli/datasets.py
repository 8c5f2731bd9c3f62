"""``enginehouse datasets upload|list|show|delete``: JSONL files to fine-tune on."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from enginehouse.cli import render
from enginehouse.cli.config import connect
from enginehouse.cli.listing import fetch_list, print_list
from enginehouse.cli.output import print_json, show
from enginehouse.cli.params import ApiKeyOption, JsonOption, LimitOption, UrlOption
from enginehouse.cli.resolve import DATASET, find, find_id

app = typer.Typer(help="Datasets: JSONL files fine-tuning jobs train on.", no_args_is_help=True)

DatasetArgument = Annotated[str, typer.Argument(metavar="ID_OR_NAME", help="Dataset id or name.")]


@app.command("upload")
def upload(
    file: Annotated[Path, typer.Argument(help="A JSONL file: one JSON object per line.")],
    name: Annotated[str | None, typer.Option("--name", help="Dataset name (default: the file's).")] = None,
    url: UrlOption = None, api_key: ApiKeyOption = None, as_json: JsonOption = False,
) -> None:
    """Upload a JSONL dataset; the server checks every line."""
    with connect(url, api_key) as client:
        dataset = client.upload(DATASET.path, file, {"name": name or file.stem})
    if as_json:
        print_json(dataset)
    else:
        show(render.dataset_view(dataset))


@app.command("list")
def list_datasets(
    limit: LimitOption = None, url: UrlOption = None, api_key: ApiKeyOption = None, as_json: JsonOption = False,
) -> None:
    """List the organization's datasets, newest first."""
    with connect(url, api_key) as client:
        answer = fetch_list(client, DATASET.path, limit=limit)
    print_list(answer, as_json, "dataset", render.datasets_table)


@app.command("show")
def show_dataset(
    dataset: DatasetArgument, url: UrlOption = None, api_key: ApiKeyOption = None, as_json: JsonOption = False,
) -> None:
    """Show one dataset."""
    with connect(url, api_key) as client:
        found = find(client, DATASET, dataset)
    if as_json:
        print_json(found)
    else:
        show(render.dataset_view(found))


@app.command("delete")
def delete(
    dataset: DatasetArgument, url: UrlOption = None, api_key: ApiKeyOption = None, as_json: JsonOption = False,
) -> None:
    """Delete a dataset (refused while a queued or running job trains on it)."""
    with connect(url, api_key) as client:
        answer = client.delete(f"{DATASET.path}/{find_id(client, DATASET, dataset)}")
    if as_json:
        print_json(answer)
    else:
        typer.echo(f"deleted dataset {answer['id']}")
