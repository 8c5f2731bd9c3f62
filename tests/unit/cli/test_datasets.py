"""``enginehouse datasets …`` and ``enginehouse jobs create|logs|cancel`` against a real server
(its training supervisor and worker processes real too: a job whose base model does not exist
runs, fails, and says why)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tests.unit.cli.support import Invoke, run_json

ROWS = [{"text": f"row {i}", "label": "a" if i % 2 else "b"} for i in range(10)]


def _write(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_upload_list_show_and_delete(cli: Invoke, tmp_path: Path, unique: Callable[[str], str]) -> None:
    name = unique("tickets")
    dataset = run_json(cli, "datasets", "upload", str(_write(tmp_path / "t.jsonl", ROWS)), "--name", name)
    assert dataset["id"].startswith("ds-") and dataset["rows"] == 10
    assert dataset["id"] in [d["id"] for d in run_json(cli, "datasets", "list")["data"]]
    shown = cli("datasets", "show", name)
    assert shown.exit_code == 0 and dataset["id"] in shown.stdout
    deleted = cli("datasets", "delete", name)
    assert deleted.exit_code == 0, deleted.output
    assert dataset["id"] not in [d["id"] for d in run_json(cli, "datasets", "list")["data"]]


def test_a_bad_line_is_named(cli: Invoke, tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a", "label": "x"}\nnot json\n')
    result = cli("datasets", "upload", str(path))
    assert result.exit_code == 1
    assert "line 2 is not valid JSON" in result.stderr and "Traceback" not in result.output


def test_a_job_that_fails_says_why_and_keeps_its_log(
    cli: Invoke, tmp_path: Path, unique: Callable[[str], str]
) -> None:
    missing = tmp_path / "no-such-model"
    name = unique("job")
    result = cli("jobs", "create", "--name", name, "--task-type", "classification", "--base-model", str(missing),
                 "--train", str(_write(tmp_path / "train.jsonl", ROWS)), "--param", "num_train_epochs=1",
                 "--follow")
    assert result.exit_code == 1, result.output
    assert f"training job {name} failed" in result.stderr and str(missing) in result.stderr
    job = run_json(cli, "jobs", "show", name)
    assert job["status"] == "Failed" and job["parameters"]["num_train_epochs"] == 1
    logs = cli("jobs", "logs", name)
    assert logs.exit_code == 0 and logs.stdout.strip(), logs.output
    ended = cli("jobs", "cancel", name)
    assert ended.exit_code == 1 and "already ended" in ended.stderr


def test_create_refuses_a_row_that_does_not_fit(cli: Invoke, tmp_path: Path, unique: Callable[[str], str]) -> None:
    path = _write(tmp_path / "rows.jsonl", [{"text": "a", "label": "x"}, {"text": "b", "value": 1}])
    result = cli("jobs", "create", "--name", unique("job"), "--task-type", "classification",
                 "--base-model", "tiny/none", "--train", str(path))
    assert result.exit_code == 1
    assert "line 2" in result.stderr and "Traceback" not in result.output
