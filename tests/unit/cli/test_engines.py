"""``enginehouse engines …`` against a real server; engines stay Provisioning (no replicas)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from enginehouse.cli.params import base_model_name
from tests.unit.cli.conftest import RunningServer
from tests.unit.cli.support import UNPROVIDED_OPTION, Invoke, run_json


def test_create_shows_the_engine_and_why_it_waits(
    cli: Invoke, unique: Callable[[str], str]
) -> None:
    name = unique("eng")
    result = cli("engines", "create", name, "--base-model", "tiny/base", "--task-type",
                 "text-generation", "--deployment-option", UNPROVIDED_OPTION,
                 "--runtime-options", '{"max_loras": 4}')
    assert result.exit_code == 0, result.output
    assert f"engine {name}" in result.stdout
    assert "Provisioning" in result.stdout and UNPROVIDED_OPTION in result.stdout
    assert '"max_loras": 4' in result.stdout


def test_create_passes_json_options_through(cli: Invoke, unique: Callable[[str], str]) -> None:
    engine = run_json(
        cli, "engines", "create", unique("eng"), "--base-model", "tiny/base",
        "--task-type", "text-generation", "--deployment-option", UNPROVIDED_OPTION,
        "--autoscaling", '{"min_replicas": 1, "max_replicas": 2}',
        "--resource-management",
        '{"management_type": "inactive_timeout", "management_config": {"inactive_duration": 60}}',
    )
    assert engine["autoscaling"]["max_replicas"] == 2
    assert engine["resource_management_config"]["management_type"] == "inactive_timeout"
    assert engine["status"] == "Provisioning"


def test_invalid_json_flag_is_a_usage_error(cli: Invoke) -> None:
    result = cli("engines", "create", "x", "--base-model", "b", "--task-type", "text-generation",
                 "--autoscaling", "{not json")
    assert result.exit_code == 2
    assert "not valid JSON" in result.output


def test_list_filters_and_shows_a_table(cli: Invoke, provisioning_engine: dict) -> None:
    listed = run_json(cli, "engines", "list", "--task-type", "text-generation")
    assert provisioning_engine["id"] in [e["id"] for e in listed["data"]]
    other = run_json(cli, "engines", "list", "--base-model", "some/other-model")
    assert other["data"] == []

    table = cli("engines", "list")
    assert table.exit_code == 0, table.output
    assert provisioning_engine["id"] in table.stdout
    assert provisioning_engine["name"] in table.stdout


def test_show_by_id_and_by_name(cli: Invoke, provisioning_engine: dict) -> None:
    by_id = run_json(cli, "engines", "show", provisioning_engine["id"])
    by_name = run_json(cli, "engines", "show", provisioning_engine["name"])
    assert by_id["id"] == by_name["id"] == provisioning_engine["id"]

    view = cli("engines", "show", provisioning_engine["name"])
    assert view.exit_code == 0, view.output
    assert provisioning_engine["id"] in view.stdout and "Provisioning" in view.stdout


def test_delete_by_id(cli: Invoke, provisioning_engine: dict) -> None:
    deleting = run_json(cli, "engines", "delete", provisioning_engine["id"])
    assert deleting["status"] == "Deleting"


def test_delete_by_name_waits_until_gone(cli: Invoke, provisioning_engine: dict) -> None:
    result = cli("engines", "delete", provisioning_engine["name"], "--wait")
    assert result.exit_code == 0, result.output
    assert f"engine {provisioning_engine['name']} deleted" in result.stdout
    gone = cli("engines", "show", provisioning_engine["id"])
    assert gone.exit_code == 1


def test_delete_wait_json_prints_only_the_final_json(
    cli: Invoke, provisioning_engine: dict
) -> None:
    result = cli("engines", "delete", provisioning_engine["id"], "--wait", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "id": provisioning_engine["id"], "name": provisioning_engine["name"], "deleted": True
    }


def test_wait_gives_up_after_the_timeout(cli: Invoke, unique: Callable[[str], str]) -> None:
    # Provisioning never settles on this installation, so only --timeout ends the wait.
    result = cli("engines", "create", unique("eng"), "--base-model", "tiny/base", "--task-type",
                 "text-generation", "--deployment-option", UNPROVIDED_OPTION,
                 "--wait", "--timeout", "0.3", "--json")
    assert result.exit_code == 1
    assert "gave up waiting" in result.stderr and "Provisioning" in result.stderr
    assert result.stdout == ""


def test_deactivate_refuses_a_provisioning_engine(cli: Invoke, provisioning_engine: dict) -> None:
    result = cli("engines", "deactivate", provisioning_engine["name"])
    assert result.exit_code == 1
    assert "only an Active engine can be deactivated" in result.stderr


def test_events_record_the_creation(cli: Invoke, provisioning_engine: dict) -> None:
    events = run_json(cli, "engines", "events", provisioning_engine["name"])
    assert events["data"][0]["to"] == "Provisioning"
    table = cli("engines", "events", provisioning_engine["id"])
    assert table.exit_code == 0 and "Provisioning" in table.stdout


def test_deployment_options(cli: Invoke) -> None:
    options = run_json(cli, "engines", "options")
    assert UNPROVIDED_OPTION in [o["name"] for o in options["data"]]
    assert UNPROVIDED_OPTION in cli("engines", "options").stdout


def test_a_relative_base_model_is_the_callers_directory_not_the_servers(
    server: RunningServer, tmp_path: Path, unique: Callable[[str], str]
) -> None:
    # The CLI runs as a user runs it, in a directory of its own; the server's working directory
    # (this test process's) has no such model, so only the CLI can have resolved it.
    caller = tmp_path / "caller"
    (caller / "models" / "mine").mkdir(parents=True)
    assert not (Path.cwd() / "models" / "mine").exists()
    name = unique("eng")
    env = {**os.environ, "ENGINEHOUSE_URL": server.url, "ENGINEHOUSE_API_KEY": server.admin_key}
    command = [sys.executable, "-c", "from enginehouse.cli.main import app; app()", "engines", "create", name,
               "--base-model", "models/mine", "--task-type", "text-generation", "--deployment-option",
               UNPROVIDED_OPTION, "--json"]
    created = subprocess.run(command, cwd=caller, env=env, capture_output=True, text=True, timeout=120)
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["base_model"] == str((caller / "models" / "mine").resolve())
    listed = subprocess.run([*command[:3], "engines", "list", "--base-model", "./models/mine", "--json"],
                            cwd=caller, env=env, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert [engine["name"] for engine in json.loads(listed.stdout)["data"]] == [name]


def test_base_model_names_that_are_not_relative_paths_go_as_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "org" / "local").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert base_model_name("org/local") == str(tmp_path / "org" / "local")  # a directory here
    assert base_model_name("./not-yet") == str(tmp_path / "not-yet")
    assert base_model_name("../up") == str(tmp_path.parent / "up")
    assert base_model_name("org/remote") == "org/remote"  # a Hub id
    assert base_model_name("/srv/models/x") == "/srv/models/x"  # the server's machine's, as given
    assert base_model_name("~/models/x") == "~/models/x"  # the server's user's home
