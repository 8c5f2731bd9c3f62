"""``enginehouse jobs register|list|show`` against a real server."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.unit.cli.support import Invoke, run_json


def test_register_makes_relative_paths_absolute_and_lists_the_job(
    cli: Invoke, lora_checkpoint: Callable[[str], Path], unique: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first, second = lora_checkpoint("epoch-1"), lora_checkpoint("epoch-2")
    # The server's working directory is not the user's, so relative paths must be resolved here.
    monkeypatch.chdir(first.parent)
    name = unique("job")
    job = run_json(cli, "jobs", "register", "--name", name, "--task-type", "text-generation",
                   "--base-model", "tiny/base", "--checkpoint", "1=epoch-1",
                   "--checkpoint", f"2={second}")
    assert job["id"].startswith("tr-")
    assert [(c["checkpoint"], c["path"]) for c in job["checkpoints"]] == [
        (1, str(first.resolve())), (2, str(second.resolve()))
    ]

    listed = run_json(cli, "jobs", "list")
    assert job["id"] in [j["id"] for j in listed["data"]]

    table = cli("jobs", "list")
    assert table.exit_code == 0, table.output
    assert job["id"] in table.stdout and name in table.stdout and "1, 2" in table.stdout

    shown = cli("jobs", "show", name)
    assert shown.exit_code == 0, shown.output
    assert str(second.resolve()) in shown.stdout


def test_register_human_view_shows_checkpoints(
    cli: Invoke, lora_checkpoint: Callable[[str], Path], unique: Callable[[str], str]
) -> None:
    path = lora_checkpoint("adapter")
    result = cli("jobs", "register", "--name", unique("job"), "--task-type", "text-generation",
                 "--base-model", "tiny/base", "--checkpoint", f"3={path}")
    assert result.exit_code == 0, result.output
    assert "checkpoints" in result.stdout and str(path) in result.stdout


def test_register_reports_the_servers_reason_for_a_bad_checkpoint(
    cli: Invoke, tmp_path: Path, unique: Callable[[str], str]
) -> None:
    result = cli("jobs", "register", "--name", unique("job"), "--task-type", "text-generation",
                 "--base-model", "tiny/base", "--checkpoint", f"1={tmp_path / 'missing'}")
    assert result.exit_code == 1
    assert "does not exist" in result.stderr
    assert "Traceback" not in result.output


def test_checkpoint_flag_must_be_n_equals_path(cli: Invoke) -> None:
    result = cli("jobs", "register", "--name", "x", "--task-type", "text-generation",
                 "--base-model", "tiny/base", "--checkpoint", "just-a-path")
    assert result.exit_code == 2
    assert "N=PATH" in result.output
