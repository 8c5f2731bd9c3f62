"""``enginehouse experiments create|list|show|add-examples|train``: Playground experiments."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from enginehouse.cli import render
from enginehouse.cli.client import ApiClient
from enginehouse.cli.config import connect
from enginehouse.cli.errors import CliError
from enginehouse.cli.jobs import ENDED, show_result
from enginehouse.cli.listing import fetch_list, print_list
from enginehouse.cli.output import print_json, show
from enginehouse.cli.params import (
    DEFAULT_TIMEOUT_S, ApiKeyOption, JsonOption, LimitOption, TimeoutOption, UrlOption, base_model_name,
)
from enginehouse.cli.resolve import EXPERIMENT, find, find_id
from enginehouse.cli.wait import settles_at, wait_until

app = typer.Typer(help="Playground experiments: classifiers described in words, refined by examples.",
                  no_args_is_help=True)

ExperimentArgument = Annotated[str, typer.Argument(metavar="ID_OR_NAME", help="Experiment id or name.")]


def parse_class(value: str) -> dict[str, str]:
    """``urgent=needs action now`` → {"name": "urgent", "description": "needs action now"}."""
    name, separator, description = value.partition("=")
    if not separator or not name.strip() or not description.strip():
        raise typer.BadParameter(f"{value!r} is not NAME=DESCRIPTION", param_hint="--class")
    return {"name": name.strip(), "description": description.strip()}


@app.command("create")
def create(
    name: Annotated[str, typer.Option("--name", help="Experiment name.")],
    mode: Annotated[str, typer.Option("--mode", help="decision, routing, judge, tool_calling or regression.")],
    base_model: Annotated[str, typer.Option("--base-model", help="The encoder (path or Hub id).")],
    classes: Annotated[list[str], typer.Option(
        "--class", metavar="NAME=DESCRIPTION", help="A class and what it means; repeat (a judge has one).")],
    min_value: Annotated[float | None, typer.Option("--min", help="Regression: the lowest score.")] = None,
    max_value: Annotated[float | None, typer.Option("--max", help="Regression: the highest score.")] = None,
    low: Annotated[str | None, typer.Option("--low", help="Regression: what the lowest score means.")] = None,
    high: Annotated[str | None, typer.Option("--high", help="Regression: what the highest score means.")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait until version 1 is built.")] = False,
    timeout: TimeoutOption = DEFAULT_TIMEOUT_S,
    url: UrlOption = None, api_key: ApiKeyOption = None, as_json: JsonOption = False,
) -> None:
    """Create an experiment; version 1 is built from the descriptions alone (zero-shot)."""
    parsed = [parse_class(value) for value in classes]
    extra = {"min_value": min_value, "max_value": max_value, "low_description": low, "high_description": high}
    for item in parsed:
        item.update({key: value for key, value in extra.items() if value is not None})
    body = {"name": name, "mode": mode, "base_model": base_model_name(base_model), "classes": parsed}
    with connect(url, api_key) as client:
        experiment = client.post(EXPERIMENT.path, body)
        if wait:
            experiment = _wait_version(client, experiment["id"], 1, timeout, live=not as_json)
        _finish(experiment, as_json)


@app.command("list")
def list_experiments(
    limit: LimitOption = None, url: UrlOption = None, api_key: ApiKeyOption = None, as_json: JsonOption = False,
) -> None:
    """List the organization's experiments, newest first."""
    with connect(url, api_key) as client:
        answer = fetch_list(client, EXPERIMENT.path, limit=limit)
    print_list(answer, as_json, "experiment", render.experiments_table)


@app.command("show")
def show_experiment(
    experiment: ExperimentArgument, url: UrlOption = None, api_key: ApiKeyOption = None, as_json: JsonOption = False,
) -> None:
    """Show an experiment: its classes, examples and versions with their test results."""
    with connect(url, api_key) as client:
        found = find(client, EXPERIMENT, experiment)
    if as_json:
        print_json(found)
    else:
        show(render.experiment_view(found))


def read_examples(path: Path) -> list[dict[str, Any]]:
    """A JSONL file of ``{"text", "label"}`` (or ``"value"``) rows."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read {path}: {exc}") from None
    rows = []
    for number, line in enumerate(lines, 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError as exc:
                raise CliError(f"{path} line {number} is not valid JSON ({exc})") from None
    return rows


@app.command("add-examples")
def add_examples(
    experiment: ExperimentArgument,
    file: Annotated[Path | None, typer.Option("--file", help="JSONL of {text, label} rows ({text, value} for a regression, {text, entities} for an ner).")] = None,
    examples: Annotated[list[str] | None, typer.Option(
        "--example", metavar="LABEL=TEXT", help="One labelled example; repeat.")] = None,
    url: UrlOption = None, api_key: ApiKeyOption = None, as_json: JsonOption = False,
) -> None:
    """Add labelled examples the next trained version learns from."""
    rows = read_examples(file) if file is not None else []
    for value in examples or []:
        label, separator, text = value.partition("=")
        if not separator:
            raise typer.BadParameter(f"{value!r} is not LABEL=TEXT", param_hint="--example")
        rows.append({"text": text, "label": label})
    if not rows:
        raise typer.BadParameter("give --file or at least one --example")
    with connect(url, api_key) as client:
        answer = client.post(f"{EXPERIMENT.path}/{find_id(client, EXPERIMENT, experiment)}/examples",
                             {"examples": rows})
    if as_json:
        print_json(answer)
    else:
        typer.echo(f"added {len(rows)} example(s); the experiment has {answer['count']}")


@app.command("train")
def train(
    experiment: ExperimentArgument,
    wait: Annotated[bool, typer.Option("--wait", help="Wait until the new version is trained.")] = False,
    timeout: TimeoutOption = DEFAULT_TIMEOUT_S,
    url: UrlOption = None, api_key: ApiKeyOption = None, as_json: JsonOption = False,
) -> None:
    """Train the next version on the examples (a fifth held out to test it beside version 1)."""
    with connect(url, api_key) as client:
        experiment_id = find_id(client, EXPERIMENT, experiment)
        answer = client.post(f"{EXPERIMENT.path}/{experiment_id}/train")
        found = (_wait_version(client, experiment_id, answer["version"], timeout, live=not as_json) if wait
                 else client.get(f"{EXPERIMENT.path}/{experiment_id}"))
        _finish(found, as_json)


def _wait_version(client: ApiClient, experiment_id: str, version: int, timeout: float,
                  live: bool) -> dict[str, Any]:
    """The experiment once its version ``version`` has ended (or is gone); CliError after ``timeout``."""
    seen: dict[str, Any] = {}

    def version_state() -> dict[str, Any] | None:
        seen["experiment"] = client.get(f"{EXPERIMENT.path}/{experiment_id}")
        return next((v for v in seen["experiment"]["versions"] if v["version"] == version), None)

    wait_until(version_state, settles_at(ENDED), f"version {version}", timeout=timeout, live=live)
    return dict(seen["experiment"])


def _finish(experiment: dict[str, Any], as_json: bool) -> None:
    failed = [v for v in experiment.get("versions", []) if v["status"] == "Failed"]
    latest_failed = bool(failed) and failed[-1]["version"] == experiment.get("latest_version")
    show_result(experiment, as_json, render.experiment_view,
                f"version {failed[-1]['version']} of experiment {experiment['name']} failed: "
                f"{failed[-1].get('status_reason')}" if latest_failed else None)
