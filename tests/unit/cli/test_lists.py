"""The list commands follow the API's pages: every item by default, the newest N with --limit.

Pages are made two items long here, so that a handful of objects spans several of them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from enginehouse.cli import listing
from tests.unit.cli.support import UNPROVIDED_OPTION, Invoke, run_json


@pytest.fixture(autouse=True)
def short_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(listing, "PAGE_SIZE", 2)
    monkeypatch.setattr(listing, "ENGINE_PAGE_SIZE", 2)


def create_engines(cli: Invoke, unique: Callable[[str], str], count: int, base_model: str) -> list[dict]:
    return [run_json(cli, "engines", "create", unique("eng"), "--base-model", base_model,
                     "--task-type", "text-generation", "--deployment-option", UNPROVIDED_OPTION)
            for _ in range(count)]


def test_engines_list_reads_every_page(cli: Invoke, unique: Callable[[str], str]) -> None:
    base_model = unique("model")  # only this test's engines: the server is shared
    created = create_engines(cli, unique, 5, base_model)
    listed = run_json(cli, "engines", "list", "--base-model", base_model)
    assert [e["id"] for e in listed["data"]] == [e["id"] for e in reversed(created)]
    assert listed["has_more"] is False
    assert listed["first_id"] == created[-1]["id"] and listed["last_id"] == created[0]["id"]

    table = cli("engines", "list", "--base-model", base_model)
    assert table.exit_code == 0, table.output
    assert all(e["name"] in table.stdout for e in created)
    assert "there are more" not in table.stdout


def test_limit_shows_the_newest_and_says_there_are_more(cli: Invoke, unique: Callable[[str], str]) -> None:
    base_model = unique("model")
    created = create_engines(cli, unique, 4, base_model)
    listed = run_json(cli, "engines", "list", "--base-model", base_model, "--limit", "3")
    assert [e["id"] for e in listed["data"]] == [e["id"] for e in reversed(created)][:3]
    assert listed["has_more"] is True

    table = cli("engines", "list", "--base-model", base_model, "--limit", "1")
    assert table.exit_code == 0, table.output
    assert created[-1]["name"] in table.stdout and created[0]["name"] not in table.stdout
    assert "the newest 1 engines; there are more" in table.stdout

    exact = run_json(cli, "engines", "list", "--base-model", base_model, "--limit", "4")
    assert len(exact["data"]) == 4 and exact["has_more"] is False
    assert cli("engines", "list", "--limit", "0").exit_code == 2


def test_names_are_found_beyond_the_first_page(cli: Invoke, unique: Callable[[str], str]) -> None:
    oldest = create_engines(cli, unique, 3, unique("model"))[0]
    shown = run_json(cli, "engines", "show", oldest["name"])
    assert shown["id"] == oldest["id"]


def test_deployments_and_jobs_lists_follow_pages(
    cli: Invoke, unique: Callable[[str], str], lora_checkpoint: Callable[[str], Path]
) -> None:
    engine = create_engines(cli, unique, 1, unique("model"))[0]
    path = lora_checkpoint("epoch-1")
    jobs = [run_json(cli, "jobs", "register", "--name", unique("job"), "--task-type", "text-generation",
                     "--base-model", "tiny/base", "--checkpoint", f"1={path}") for _ in range(3)]
    names = [unique("dp") for _ in range(3)]
    for name in names:
        run_json(cli, "deploy", "--engine", engine["name"], "--name", name,
                 "--training-id", jobs[0]["id"], "--checkpoint", "1")

    on_engine = run_json(cli, "deployments", "list", "--engine", engine["name"])
    assert [d["name"] for d in on_engine["data"]] == names[::-1]
    table = cli("deployments", "list", "--engine", engine["id"], "--limit", "2")
    assert table.exit_code == 0, table.output
    assert names[2] in table.stdout and names[0] not in table.stdout
    assert engine["name"] in table.stdout and "there are more" in table.stdout

    listed = run_json(cli, "jobs", "list")
    ids = [j["id"] for j in listed["data"]]
    assert ids[:3] == [j["id"] for j in reversed(jobs)] and listed["has_more"] is False
    newest = run_json(cli, "jobs", "list", "--limit", "1")
    assert [j["id"] for j in newest["data"]] == [jobs[-1]["id"]] and newest["has_more"] is True

    events = run_json(cli, "engines", "events", engine["name"])
    assert [e["to"] for e in events["data"]] == ["Provisioning", "Pending", "Pending", "Pending"]
    assert [e["name"] for e in events["data"][1:]] == names
