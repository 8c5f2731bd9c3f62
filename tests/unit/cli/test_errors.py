"""How the CLI fails: one red line on stderr and exit 1, never a traceback."""

from __future__ import annotations

import socket

from tests.unit.cli.conftest import RunningServer
from tests.unit.cli.support import Invoke, run_json


def test_unknown_engine(cli: Invoke) -> None:
    for ref in ("no-such-engine", "engine-0000000000000000"):
        result = cli("engines", "show", ref)
        assert result.exit_code == 1
        assert f"no engine with the id or name {ref!r}" in result.stderr
        assert result.stdout == ""


def test_unknown_engine_for_deploy(cli: Invoke) -> None:
    result = cli("deploy", "--engine", "nope", "--name", "x", "--training-id", "tr-x",
                 "--checkpoint", "1")
    assert result.exit_code == 1
    assert "no engine with the id or name 'nope'" in result.stderr


def test_bad_api_key(cli: Invoke) -> None:
    result = cli("engines", "list", key="eh-not-a-key")
    assert result.exit_code == 1
    assert "invalid API key" in result.stderr and "--api-key" in result.stderr
    assert "Traceback" not in result.output


def test_unreachable_server(cli: Invoke) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nobody listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    result = cli("engines", "list", url=url)
    assert result.exit_code == 1
    assert f"cannot reach the enginehouse server at {url}" in result.stderr
    assert "enginehouse up" in result.stderr


def test_missing_key_says_how_to_provide_one(cli: Invoke) -> None:
    result = cli("jobs", "list", key=None)
    assert result.exit_code == 1
    assert "no API key" in result.stderr and "ENGINEHOUSE_API_KEY" in result.stderr


def test_flags_override_the_environment(cli: Invoke, server: RunningServer) -> None:
    result = cli("engines", "list", "--url", server.url, "--api-key", server.admin_key,
                 key="eh-wrong", url="http://127.0.0.1:9")
    assert result.exit_code == 0, result.output


def test_admin_key_file_is_used_on_the_servers_machine(
    cli: Invoke, server: RunningServer, monkeypatch
) -> None:
    monkeypatch.setenv("ENGINEHOUSE_DATA_DIR", str(server.data_dir))
    assert "data" in run_json(cli, "engines", "list", key=None)
