"""A baseline server as a subprocess of the benchmark (``transformers serve``, vLLM): started in a
session of its own, waited for until it answers its health check, and stopped with everything it
spawned, also after an error."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.integration.harness import wait_for


class ServeError(RuntimeError):
    """The server could not be started; the message says why (with its log's tail)."""


@contextmanager
def serve_process(command: list[str], env: dict[str, str], log_path: Path, port: int, timeout: float,
                  what: str) -> Iterator[str]:
    """Run ``command`` (which listens on 127.0.0.1:``port``) until the block ends; yields its base
    URL once ``GET /health`` answers 200."""
    with open(log_path, "ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(process, url, log_path, timeout, what)
        yield url
    finally:
        _stop(process)


def _wait_healthy(process: subprocess.Popen[bytes], url: str, log_path: Path, timeout: float, what: str) -> None:
    def healthy() -> bool:
        if process.poll() is not None:
            raise ServeError(f"{what} exited with {process.returncode}: {tail(log_path)}")
        try:
            return httpx.get(f"{url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(healthy, timeout, interval=0.5, what=f"{what} on {url}")
    except AssertionError as exc:
        raise ServeError(f"{exc}; log: {tail(log_path)}") from None


def _stop(process: subprocess.Popen[bytes]) -> None:
    # The whole session: vLLM's engine and worker processes go with its API server.
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def tail(log_path: Path, chars: int = 800) -> str:
    try:
        return " ".join(log_path.read_text(errors="replace")[-chars:].split())
    except OSError:
        return "(no log)"
