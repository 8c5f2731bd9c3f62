"""A real enginehouse server in a subprocess, and helpers to wait on it.

Nothing here is a stand-in: the server is ``enginehouse up`` and starts real replica processes.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
from sqlalchemy import create_engine, select

from enginehouse.db.models import ReplicaModel
from enginehouse.replicaauth import ReplicaAddress
from enginehouse.settings import Settings

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check: Callable[[], T | None], timeout: float = 120.0, interval: float = 0.25,
             what: str = "condition") -> T:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


class ServerProcess:
    """``enginehouse up`` on a free port with its own data directory."""

    def __init__(self, data_dir: Path, api_key: str, database_url: str = "",
                 settings: dict[str, str] | None = None, demo: bool = False) -> None:
        self.data_dir = data_dir
        self.api_key = api_key
        self.database_url = database_url
        # More ENGINEHOUSE_* settings for this server (a short hang timeout, say).
        self.settings = settings or {}
        # `enginehouse up --demo`: the demo sets itself up in the background after the start.
        self.demo = demo
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / "server.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        env = {
            **os.environ,
            "ENGINEHOUSE_DATA_DIR": str(self.data_dir),
            "ENGINEHOUSE_BOOTSTRAP_KEY": self.api_key,
            "ENGINEHOUSE_RECONCILE_INTERVAL_S": "0.2",
            "ENGINEHOUSE_REPLICA_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "HF_HUB_OFFLINE": "1",
            **self.settings,
        }
        if self.database_url:
            env["ENGINEHOUSE_DATABASE_URL"] = self.database_url
        else:
            env.pop("ENGINEHOUSE_DATABASE_URL", None)
        return env

    def start(self) -> "ServerProcess":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = [str(Path(sys.executable).parent / "enginehouse"), "up",
                   "--host", "127.0.0.1", "--port", str(self.port), "--data-dir", str(self.data_dir)]
        if self.demo:
            command.append("--demo")
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(command, env=self.env(), stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        wait_for(self._healthy, timeout=60, what=f"server on {self.url} (log: {self.log_path})")
        return self

    def _healthy(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"server exited with {self.process.returncode}:\n{self.log_tail()}")
        try:
            return httpx.get(f"{self.url}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        """SIGKILL the server alone, as a crash would: its replicas keep running."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def shutdown(self) -> None:
        """A clean shutdown (SIGTERM), as Ctrl-C or a service manager would do."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def stop(self) -> None:
        """Shut down, then make sure no replica of this server survives the test."""
        self.shutdown()
        for pid in replica_pids(self.data_dir):
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def client(self, api_key: str | None = None) -> httpx.Client:
        key = api_key or self.api_key
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {key}"}, timeout=120)

    def replica_address(self, replica_id: str) -> ReplicaAddress:
        """Where a replica answers and its secret, read from this server's database as the
        gateway reads them (the API never shows the secret)."""
        url = Settings(data_dir=self.data_dir, database_url=self.database_url).resolved_database_url()
        engine = create_engine(url)
        try:
            with engine.connect() as connection:
                query = select(ReplicaModel.url, ReplicaModel.secret).where(ReplicaModel.id == replica_id)
                row = connection.execute(query).one()
        finally:
            engine.dispose()
        return ReplicaAddress(row.url, row.secret)

    def replica_client(self, replica_id: str, timeout: float = 60) -> httpx.Client:
        """A client of one replica's own address, sending its secret as the control plane does."""
        address = self.replica_address(replica_id)
        return httpx.Client(base_url=address.url, headers=address.headers(), timeout=timeout)


def replica_pids(data_dir: Path) -> list[int]:
    """Live replica processes started by the server that uses ``data_dir`` (they inherit its
    environment, which names the data directory)."""
    marker = f"ENGINEHOUSE_DATA_DIR={data_dir}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            if b"enginehouse.runtime" not in cmdline:
                continue
            environ = (entry / "environ").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue
        if marker in environ and state != "Z":
            pids.append(int(entry.name))
    return pids


def replica_pid(data_dir: Path, url: str) -> int:
    """The process of the replica that serves ``url`` (its port is on its command line)."""
    port = url.rsplit(":", 1)[-1].encode()
    for pid in replica_pids(data_dir):
        try:
            if port in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"):
                return pid
        except OSError:
            continue
    raise AssertionError(f"no replica process serves {url}")


def engine_status(client: httpx.Client, engine_id: str) -> dict[str, Any] | None:
    response = client.get(f"/v1/engines/{engine_id}")
    return response.json() if response.status_code == 200 else None


def wait_engine(client: httpx.Client, engine_id: str, status: str, timeout: float = 180) -> dict[str, Any]:
    def settled() -> dict[str, Any] | None:
        engine = engine_status(client, engine_id)
        if engine and engine["status"] == "Failed" and status != "Failed":
            raise AssertionError(f"engine failed: {engine['status_reason']}")
        return engine if engine and engine["status"] == status else None

    return wait_for(settled, timeout, what=f"engine {engine_id} to be {status}")


def wait_deployments(client: httpx.Client, engine_id: str, status: str = "Deployed",
                     timeout: float = 180) -> dict[str, Any]:
    """Wait until every deployment of the engine has ``status``; returns the engine."""
    def settled() -> dict[str, Any] | None:
        engine = engine_status(client, engine_id)
        if not engine or not engine["deployments"]:
            return None
        statuses = {d["name"]: d["status"] for d in engine["deployments"]}
        failed = {d["name"]: d["status_reason"] for d in engine["deployments"] if d["status"] == "Failed"}
        if failed and status != "Failed":
            raise AssertionError(f"deployments failed: {failed}")
        return engine if set(statuses.values()) == {status} else None

    return wait_for(settled, timeout, what=f"deployments of {engine_id} to be {status}")


def wait_statuses(http: httpx.Client, engine_id: str, expected: dict[str, str], timeout: float = 90) -> dict[str, Any]:
    """Wait until the engine's deployments are exactly ``expected`` (name: status); returns the engine."""
    def settled() -> dict[str, Any] | None:
        engine = engine_status(http, engine_id)
        if engine is None:
            return None
        statuses = {d["name"]: d["status"] for d in engine["deployments"]}
        return engine if statuses == expected else None

    return wait_for(settled, timeout, what=f"deployments of {engine_id} to be {expected}")
