"""``enginehouse up`` builds Settings from flags over ENGINEHOUSE_* and hands them to serve()."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from enginehouse import server
from enginehouse.cli.main import app
from enginehouse.settings import Settings


def test_flags_override_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[tuple[Settings, bool]] = []
    monkeypatch.setattr(server, "serve",
                        lambda settings, demo=False: calls.append((settings, demo)))
    monkeypatch.setenv("ENGINEHOUSE_HOST", "0.0.0.0")
    monkeypatch.setenv("ENGINEHOUSE_PORT", "9000")

    args = ["up", "--port", "8555", "--data-dir", str(tmp_path), "--demo"]
    result = CliRunner().invoke(app, args)

    assert result.exit_code == 0, result.output
    [(settings, demo)] = calls
    assert (settings.host, settings.port, settings.data_dir) == ("0.0.0.0", 8555, tmp_path)
    assert demo is True


def test_invalid_environment_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server, "serve", lambda settings, demo=False: None)
    monkeypatch.setenv("ENGINEHOUSE_PORT", "not-a-port")
    result = CliRunner().invoke(app, ["up"])
    assert result.exit_code == 1 and "invalid configuration" in result.stderr
