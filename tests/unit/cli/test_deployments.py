"""``enginehouse deploy`` and ``enginehouse deployments …`` onto a Provisioning engine."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.unit.cli.support import Invoke, run_json


@pytest.fixture
def job(cli: Invoke, lora_checkpoint: Callable[[str], Path], unique: Callable[[str], str]) -> dict:
    return run_json(cli, "jobs", "register", "--name", unique("job"), "--task-type",
                    "text-generation", "--base-model", "tiny/base",
                    "--checkpoint", f"1={lora_checkpoint('epoch-1')}")


def test_deploy_onto_a_provisioning_engine_is_pending(
    cli: Invoke, provisioning_engine: dict, job: dict, unique: Callable[[str], str]
) -> None:
    name = unique("dp")
    deployment = run_json(cli, "deploy", "--engine", provisioning_engine["name"], "--name", name,
                          "--training-id", job["id"], "--checkpoint", "1")
    assert deployment["status"] == "Pending"
    assert deployment["engine_id"] == provisioning_engine["id"]
    assert deployment["source"] == {
        "type": "training_job", "training_id": job["id"], "checkpoint": 1
    }

    listed = run_json(cli, "deployments", "list")
    assert deployment["id"] in [d["id"] for d in listed["data"]]
    table = cli("deployments", "list")
    assert table.exit_code == 0 and name in table.stdout and "Pending" in table.stdout
    shown = run_json(cli, "deployments", "show", name)
    assert shown["id"] == deployment["id"]


def test_deploy_human_view_and_training_job_by_name(
    cli: Invoke, provisioning_engine: dict, job: dict, unique: Callable[[str], str]
) -> None:
    name = unique("dp")
    result = cli("deploy", "--engine", provisioning_engine["id"], "--name", name,
                 "--training-id", job["name"], "--checkpoint", "1")
    assert result.exit_code == 0, result.output
    assert f"deployment {name}" in result.stdout
    assert f"{job['id']} checkpoint 1" in result.stdout and "Pending" in result.stdout


def test_remove_by_name_and_by_id(
    cli: Invoke, provisioning_engine: dict, job: dict, unique: Callable[[str], str]
) -> None:
    first, second = unique("dp"), unique("dp")
    for name in (first, second):
        run_json(cli, "deploy", "--engine", provisioning_engine["id"], "--name", name,
                 "--training-id", job["id"], "--checkpoint", "1")
    removed = cli("deployments", "remove", first)
    assert removed.exit_code == 0, removed.output
    assert f"removed deployment {first}" in removed.stdout

    second_id = run_json(cli, "deployments", "show", second)["id"]
    assert run_json(cli, "deployments", "remove", second_id)["deleted"] is True

    names = [d["name"] for d in run_json(cli, "deployments", "list")["data"]]
    assert first not in names and second not in names


def test_deploy_needs_exactly_one_source(cli: Invoke, provisioning_engine: dict) -> None:
    result = cli("deploy", "--engine", provisioning_engine["id"], "--name", "x",
                 "--training-id", "tr-1")
    assert result.exit_code == 2
    assert "--training-id with --checkpoint" in result.output


def test_deploy_an_unknown_checkpoint_shows_the_servers_message(
    cli: Invoke, provisioning_engine: dict, job: dict, unique: Callable[[str], str]
) -> None:
    result = cli("deploy", "--engine", provisioning_engine["id"], "--name", unique("dp"),
                 "--training-id", job["id"], "--checkpoint", "7")
    assert result.exit_code == 1
    assert "error:" in result.stderr and "Traceback" not in result.output
