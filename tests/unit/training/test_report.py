"""The report files: written whole, read back by the server even while the worker writes."""

from __future__ import annotations

import json
from pathlib import Path

from enginehouse.training.report import (
    CHECKPOINTS_FILE,
    EpochTraining,
    TrainingReport,
    append_checkpoint,
    read_report,
    write_baseline,
    write_outcome,
    write_progress,
)


def test_an_empty_directory_reports_nothing_yet(tmp_path: Path) -> None:
    assert read_report(tmp_path) == TrainingReport(progress=None, checkpoints=[], outcome=None)


def test_written_files_read_back(tmp_path: Path) -> None:
    write_progress(tmp_path, status="Running", step=3, total_steps=10, epoch=0.3333333, loss=1.23456789)
    write_progress(tmp_path, status="Testing", step=5, total_steps=10, epoch=0.5, loss=None)
    append_checkpoint(tmp_path, 1, tmp_path / "checkpoint-1", {"eval_loss": 0.5, "accuracy": 0.9})
    append_checkpoint(tmp_path, 2, tmp_path / "checkpoint-2", {})
    write_outcome(tmp_path, "Failed", "train line 2: not valid JSON")
    report = read_report(tmp_path)
    assert report.progress == {"status": "Testing", "step": 5, "total_steps": 10, "epoch": 0.5, "loss": None}
    assert report.checkpoints == [
        {"checkpoint": 1, "path": str(tmp_path / "checkpoint-1"), "test_results": {"eval_loss": 0.5, "accuracy": 0.9}},
        {"checkpoint": 2, "path": str(tmp_path / "checkpoint-2"), "test_results": {}},
    ]
    assert report.outcome == {"status": "Failed", "reason": "train line 2: not valid JSON"}
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoints.jsonl", "outcome.json", "progress.json",  # no temporary file left behind
    ]
    write_outcome(tmp_path, "Success")
    assert read_report(tmp_path).outcome == {"status": "Success"}


def test_a_partially_written_last_line_is_skipped(tmp_path: Path) -> None:
    append_checkpoint(tmp_path, 1, tmp_path / "checkpoint-1", {"eval_loss": 0.5})
    line = json.dumps({"checkpoint": 2, "path": "p", "test_results": {}})
    with (tmp_path / CHECKPOINTS_FILE).open("a") as handle:
        handle.write(line[:17])
    assert [c["checkpoint"] for c in read_report(tmp_path).checkpoints] == [1]
    with (tmp_path / CHECKPOINTS_FILE).open("a") as handle:
        handle.write(line[17:] + "\n")
    assert [c["checkpoint"] for c in read_report(tmp_path).checkpoints] == [1, 2]


def test_damaged_files_read_as_not_written(tmp_path: Path) -> None:
    (tmp_path / "progress.json").write_text('{"status": ')
    (tmp_path / "outcome.json").write_text("[1, 2]")
    assert read_report(tmp_path) == TrainingReport()


def test_a_baseline_reads_back_and_is_none_until_written(tmp_path: Path) -> None:
    assert read_report(tmp_path).baseline is None
    write_baseline(tmp_path, {"eval_loss": 0.4, "accuracy": 0.875})
    assert read_report(tmp_path).baseline == {"test_results": {"eval_loss": 0.4, "accuracy": 0.875}}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["baseline.json"]


def test_a_trained_checkpoint_says_how_long_its_epoch_trained(tmp_path: Path) -> None:
    append_checkpoint(tmp_path, 1, tmp_path / "checkpoint-1", {}, EpochTraining(seconds=12.3456789, samples=90))
    [record] = read_report(tmp_path).checkpoints
    assert record == {"checkpoint": 1, "path": str(tmp_path / "checkpoint-1"), "test_results": {},
                      "train_seconds": 12.3457, "train_samples": 90}
