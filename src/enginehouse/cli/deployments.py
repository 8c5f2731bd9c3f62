"""``enginehouse deploy`` (wired at the top level by ``main``) and
``enginehouse deployments list|show|remove``."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from enginehouse.cli import render
from enginehouse.cli.config import connect
from enginehouse.cli.errors import CliError
from enginehouse.cli.listing import fetch_list, print_list
from enginehouse.cli.output import message, print_json, show
from enginehouse.cli.params import (
    DEFAULT_TIMEOUT_S, ApiKeyOption, JsonOption, LimitOption, TimeoutOption, UrlOption, WaitOption,
)
from enginehouse.cli.resolve import DEPLOYMENT, ENGINE, TRAINING_JOB, find, find_id
from enginehouse.cli.wait import DEPLOYMENT_SETTLED, fetch_or_none, settles_at, wait_until

app = typer.Typer(help="Deployments: named model versions served on engines.", no_args_is_help=True)

Obj = dict[str, Any]
DeploymentRef = Annotated[str, typer.Argument(metavar="ID_OR_NAME", help="Deployment id or name.")]


def _source_fields(
    training_id: str | None, checkpoint: int | None, experiment_id: str | None, version: int | None
) -> Obj:
    """Check the flag combination here so the message speaks in flags, not body fields."""
    from_job = training_id is not None and checkpoint is not None
    from_experiment = experiment_id is not None and version is not None
    given = [v for v in (training_id, checkpoint, experiment_id, version) if v is not None]
    if from_job == from_experiment or len(given) != 2:
        raise typer.BadParameter(
            "give either --training-id with --checkpoint, or --experiment-id with --version",
            param_hint="source",
        )
    if from_job:
        return {"training_id": training_id, "checkpoint": checkpoint}
    return {"experiment_id": experiment_id, "version": version}


def deploy(
    engine: Annotated[str, typer.Option("--engine", help="Engine id or name to deploy onto.")],
    name: Annotated[str, typer.Option("--name", help="Deployment name: the `model` clients pass.")],
    training_id: Annotated[
        str | None, typer.Option("--training-id", help="Training job id (or name).")
    ] = None,
    checkpoint: Annotated[int | None, typer.Option("--checkpoint", min=1, help="Epoch.")] = None,
    experiment_id: Annotated[
        str | None, typer.Option("--experiment-id", help="Experiment id.")
    ] = None,
    version: Annotated[
        int | None, typer.Option("--version", min=1, help="Experiment version.")
    ] = None,
    wait: WaitOption = False,
    timeout: TimeoutOption = DEFAULT_TIMEOUT_S,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Deploy a training job's checkpoint or an experiment's version onto an engine."""
    body = {"name": name, **_source_fields(training_id, checkpoint, experiment_id, version)}
    with connect(url, api_key) as client:
        engine_id = find_id(client, ENGINE, engine)
        if training_id is not None:
            body["training_id"] = find_id(client, TRAINING_JOB, training_id)
        created: Obj = client.post(f"/v1/engines/{engine_id}/deploy", body)
        deployment: Obj | None = created
        if wait:
            fetch = fetch_or_none(lambda: client.get(f"/v1/deployments/{created['id']}"))
            deployment = wait_until(fetch, settles_at(DEPLOYMENT_SETTLED), f"deployment {name}",
                                    timeout=timeout, live=not as_json)
        _finish(deployment, name, as_json)


def _finish(deployment: Obj | None, name: str, as_json: bool) -> None:
    if deployment is None:
        raise CliError(f"deployment {name} went away while waiting (was its engine deleted?)")
    if as_json:
        print_json(deployment)
    else:
        show(render.deployment_view(deployment))
    if deployment.get("status") == "Failed":
        reason = deployment.get("status_reason") or "no reason given"
        raise CliError(f"deployment {name} failed: {reason}")


@app.command("list")
def list_deployments(
    engine: Annotated[
        str | None, typer.Option("--engine", help="Only this engine's (id or name).")
    ] = None,
    limit: LimitOption = None,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """List the organization's deployments on all engines, newest first."""
    with connect(url, api_key) as client:
        params = {"engine_id": find_id(client, ENGINE, engine)} if engine else None
        answer = fetch_list(client, DEPLOYMENT.path, params, limit)
        # People know engines by name; fetching them is cheap next to making people look them up.
        engines = {} if as_json else {
            e["id"]: e["name"] for e in fetch_list(client, ENGINE.path)["data"]
        }
    print_list(answer, as_json, "deployment",
               lambda data: render.deployments_table(data, engine_names=engines))


@app.command("show")
def show_deployment(
    deployment: DeploymentRef,
    url: UrlOption = None, api_key: ApiKeyOption = None, as_json: JsonOption = False,
) -> None:
    """Show one deployment."""
    with connect(url, api_key) as client:
        found = find(client, DEPLOYMENT, deployment)
    if as_json:
        print_json(found)
    else:
        show(render.deployment_view(found))


@app.command("remove")
def remove(
    deployment: DeploymentRef,
    url: UrlOption = None, api_key: ApiKeyOption = None, as_json: JsonOption = False,
) -> None:
    """Remove a fine-tuned deployment (a base deployment goes only with its engine)."""
    with connect(url, api_key) as client:
        deployment_id = find_id(client, DEPLOYMENT, deployment)
        answer = client.delete(f"/v1/deployments/{deployment_id}")
    if as_json:
        print_json(answer)
    else:
        message(f"removed deployment {answer['name']} ({answer['id']})")
