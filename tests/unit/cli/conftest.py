"""Fixtures for the CLI tests: a real enginehouse server on a loopback port, and a runner that
points the CLI at it through ENGINEHOUSE_* variables (as a user's shell would)."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from click.testing import Result
from typer.testing import CliRunner

from enginehouse.cli.main import app
from enginehouse.server import create_app
from enginehouse.settings import Settings
from tests.unit.cli.support import ADMIN_KEY, UNPROVIDED_OPTION, Invoke, run_json



@dataclass(frozen=True)
class RunningServer:
    url: str
    data_dir: Path
    admin_key: str


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    data_dir = tmp_path_factory.mktemp("server")
    settings = Settings(data_dir=data_dir, database_url="", bootstrap_key=ADMIN_KEY,
                        reconcile_interval_s=0.1)
    # Bind first and hand uvicorn the socket: no window where another process takes the port.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(settings), log_level="warning", lifespan="on")
    uvicorn_server = uvicorn.Server(config)
    thread = threading.Thread(target=uvicorn_server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uvicorn_server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("the enginehouse test server did not start")
        time.sleep(0.05)
    try:
        yield RunningServer(f"http://127.0.0.1:{port}", data_dir, ADMIN_KEY)
    finally:
        uvicorn_server.should_exit = True
        thread.join(timeout=15)
        sock.close()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No ENGINEHOUSE_* from the developer's shell, and no ~/.enginehouse/admin.key picked up."""
    for name in list(os.environ):
        if name.startswith("ENGINEHOUSE_"):
            monkeypatch.delenv(name)
    empty = tmp_path / "client-data"
    empty.mkdir()
    monkeypatch.setenv("ENGINEHOUSE_DATA_DIR", str(empty))
    # Wide enough that tables never fold an id across lines.
    monkeypatch.setenv("COLUMNS", "250")


@pytest.fixture
def cli(server: RunningServer) -> Invoke:
    """``cli("engines", "list", key=...)``: run the CLI against the test server."""

    def invoke(*args: str, key: str | None = ADMIN_KEY, url: str | None = None) -> Result:
        env = {"ENGINEHOUSE_URL": url or server.url}
        if key is not None:
            env["ENGINEHOUSE_API_KEY"] = key
        return CliRunner().invoke(app, list(args), env=env)

    return invoke


@pytest.fixture
def unique() -> Callable[[str], str]:
    """Names are unique per organization and the server lives for the whole session."""
    return lambda prefix: f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def lora_checkpoint(tmp_path: Path) -> Callable[[str], Path]:
    """A directory that passes registration's checks for a LoRA adapter (files only)."""

    def make(name: str) -> Path:
        path = tmp_path / name
        path.mkdir()
        config = {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj"]}
        (path / "adapter_config.json").write_text(json.dumps(config))
        (path / "adapter_model.safetensors").write_bytes(b"")
        return path

    return make


@pytest.fixture
def provisioning_engine(cli: Invoke, unique: Callable[[str], str]) -> dict:
    """An engine that stays Provisioning (see UNPROVIDED_OPTION)."""
    return run_json(cli, "engines", "create", unique("eng"), "--base-model", "tiny/base",
                    "--task-type", "text-generation", "--deployment-option", UNPROVIDED_OPTION)
