"""``enginehouse engines …``: create, list, show, deactivate, reactivate, delete, events, logs, options."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from enginehouse.cli import render
from enginehouse.cli.client import ApiClient
from enginehouse.cli.config import connect
from enginehouse.cli.errors import CliError
from enginehouse.cli.listing import fetch_list, print_list
from enginehouse.cli.output import message, print_json, show
from enginehouse.cli.params import (
    DEFAULT_TIMEOUT_S, ApiKeyOption, JsonOption, LimitOption, TimeoutOption, UrlOption, WaitOption, base_model_name,
)
from enginehouse.cli.resolve import ENGINE, find
from enginehouse.cli.wait import ENGINE_SETTLED, fetch_or_none, gone, settles_at, wait_until

app = typer.Typer(help="Engines: pools of replicas serving one base model.", no_args_is_help=True)

Obj = dict[str, Any]
EngineRef = Annotated[str, typer.Argument(metavar="ID_OR_NAME", help="Engine id or name.")]


def _json_flag(value: str | None, flag: str) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except ValueError as exc:
        raise typer.BadParameter(f"not valid JSON: {exc}", param_hint=flag) from None


def _wait(
    client: ApiClient, engine: Obj, timeout: float, live: bool, *, until_gone: bool = False
) -> Obj | None:
    fetch = fetch_or_none(lambda: client.get(f"/v1/engines/{engine['id']}"))
    settled = gone if until_gone else settles_at(ENGINE_SETTLED)
    return wait_until(fetch, settled, f"engine {engine['name']}", timeout=timeout, live=live)


def _finish(engine: Obj | None, name: str, as_json: bool, detailed: bool) -> None:
    """Print where the engine ended up; a Failed engine (or one that vanished) is exit 1."""
    if engine is None:
        raise CliError(f"engine {name} went away while waiting")
    if as_json:
        print_json(engine)
    elif detailed:
        show(render.engine_view(engine))
    else:
        show(render.status_line(f"engine {name}", engine))
    if engine.get("status") == "Failed":
        raise CliError(f"engine {name} failed: {engine.get('status_reason') or 'no reason given'}")


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="Engine name (also the base deployment's name).")],
    base_model: Annotated[str, typer.Option("--base-model", help="Local HF directory or Hub id.")],
    task_type: Annotated[str, typer.Option("--task-type", help="e.g. text-generation.")],
    deployment_option: Annotated[
        str | None, typer.Option("--deployment-option", help="Hardware shape; default auto.")
    ] = None,
    autoscaling: Annotated[str | None, typer.Option("--autoscaling", help="JSON object.")] = None,
    resource_management: Annotated[
        str | None, typer.Option("--resource-management", help="JSON object.")
    ] = None,
    runtime_options: Annotated[
        str | None, typer.Option("--runtime-options", help="JSON object.")
    ] = None,
    wait: WaitOption = False,
    timeout: TimeoutOption = DEFAULT_TIMEOUT_S,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create an engine; --wait until it is Active (or Failed)."""
    body: Obj = {"name": name, "base_model": base_model_name(base_model), "task_type": task_type}
    optional = {
        "deployment_option": deployment_option,
        "autoscaling": _json_flag(autoscaling, "--autoscaling"),
        "resource_management_config": _json_flag(resource_management, "--resource-management"),
        "runtime_options": _json_flag(runtime_options, "--runtime-options"),
    }
    body.update({key: value for key, value in optional.items() if value is not None})
    with connect(url, api_key) as client:
        engine = client.post("/v1/engines", body)
        if wait:
            engine = _wait(client, engine, timeout, live=not as_json)
        _finish(engine, name, as_json, detailed=True)


@app.command("list")
def list_engines(
    task_type: Annotated[
        str | None, typer.Option("--task-type", help="Only this task type.")
    ] = None,
    base_model: Annotated[
        str | None, typer.Option("--base-model", help="Only this base model.")
    ] = None,
    limit: LimitOption = None,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """List the organization's engines, newest first."""
    filters = {"task_type": task_type, "base_model": base_model_name(base_model) if base_model else None}
    params = {k: v for k, v in filters.items() if v}
    with connect(url, api_key) as client:
        answer = fetch_list(client, ENGINE.path, params, limit)
    print_list(answer, as_json, "engine", render.engines_table)


@app.command("show")
def show_engine(
    engine: EngineRef,
    url: UrlOption = None, api_key: ApiKeyOption = None, as_json: JsonOption = False,
) -> None:
    """Show one engine with its deployments and replicas."""
    with connect(url, api_key) as client:
        found = find(client, ENGINE, engine)
    if as_json:
        print_json(found)
    else:
        show(render.engine_view(found))


def _change(action: str, ref: str, wait: bool, timeout: float, url: str | None,
            api_key: str | None, as_json: bool) -> None:
    with connect(url, api_key) as client:
        found = find(client, ENGINE, ref)
        engine = client.post(f"/v1/engines/{found['id']}/{action}")
        if wait:
            engine = _wait(client, engine, timeout, live=not as_json)
        _finish(engine, found["name"], as_json, detailed=False)


@app.command("deactivate")
def deactivate(
    engine: EngineRef, wait: WaitOption = False, timeout: TimeoutOption = DEFAULT_TIMEOUT_S,
    url: UrlOption = None, api_key: ApiKeyOption = None, as_json: JsonOption = False,
) -> None:
    """Stop an Active engine's replicas; its deployments are remembered."""
    _change("deactivate", engine, wait, timeout, url, api_key, as_json)


@app.command("reactivate")
def reactivate(
    engine: EngineRef, wait: WaitOption = False, timeout: TimeoutOption = DEFAULT_TIMEOUT_S,
    url: UrlOption = None, api_key: ApiKeyOption = None, as_json: JsonOption = False,
) -> None:
    """Bring an Inactive engine back with the same deployments."""
    _change("reactivate", engine, wait, timeout, url, api_key, as_json)


@app.command("delete")
def delete(
    engine: EngineRef, wait: WaitOption = False, timeout: TimeoutOption = DEFAULT_TIMEOUT_S,
    url: UrlOption = None, api_key: ApiKeyOption = None, as_json: JsonOption = False,
) -> None:
    """Delete an engine and all its deployments; --wait until it is gone."""
    with connect(url, api_key) as client:
        found = find(client, ENGINE, engine)
        deleting = client.delete(f"/v1/engines/{found['id']}")
        if not wait:
            if as_json:
                print_json(deleting)
            else:
                show(render.status_line(f"engine {found['name']}", deleting))
            return
        _wait(client, deleting, timeout, live=not as_json, until_gone=True)
    if as_json:
        print_json({"id": found["id"], "name": found["name"], "deleted": True})
    else:
        message(f"engine {found['name']} deleted")


@app.command("events")
def events(
    engine: EngineRef,
    url: UrlOption = None, api_key: ApiKeyOption = None, as_json: JsonOption = False,
) -> None:
    """Status changes of an engine and its deployments, oldest first."""
    with connect(url, api_key) as client:
        found = find(client, ENGINE, engine)
        answer = fetch_list(client, f"/v1/engines/{found['id']}/events")
    if as_json:
        print_json(answer)
    else:
        show(render.events_table(answer["data"]))


@app.command("logs")
def logs(
    engine: EngineRef,
    replica: Annotated[str | None, typer.Option("--replica", help="One replica id (default: all).")] = None,
    tail: Annotated[int, typer.Option("--tail", min=1, max=10000, help="The last lines of each log.")] = 200,
    url: UrlOption = None, api_key: ApiKeyOption = None,
) -> None:
    """Print the logs of an engine's replicas, wherever they run."""
    with connect(url, api_key) as client:
        found = find(client, ENGINE, engine)
        replica_ids = [replica] if replica else [r["id"] for r in found.get("replicas", [])]
        if not replica_ids:
            raise CliError(f"engine {found['name']} has no replicas now")
        for replica_id in replica_ids:
            lines = client.get(f"/v1/engines/{found['id']}/replicas/{replica_id}/logs", {"tail": str(tail)})["data"]
            if len(replica_ids) > 1:
                typer.echo(f"==> {replica_id} <==")  # as tail(1) heads each of several files
            for line in lines:
                typer.echo(line)


@app.command("options")
def deployment_options(
    url: UrlOption = None, api_key: ApiKeyOption = None, as_json: JsonOption = False
) -> None:
    """Hardware shapes an engine may run on (--deployment-option)."""
    with connect(url, api_key) as client:
        answer = client.get("/v1/deployment-options")
    if as_json:
        print_json(answer)
    else:
        show(render.options_table(answer["data"]))
