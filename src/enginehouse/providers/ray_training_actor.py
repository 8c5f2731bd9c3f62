"""What runs inside a fine-tuning job's Ray actor: the job's worker (``python -m
enginehouse.training``) in a job directory on the actor's node, and the files the worker writes
there, read back for the server.

Starting takes two steps, in a thread of the actor so that its constructor returns at once (the
provider waits only for a node to take the actor): the files the job names are made local first
(``localize_config``: fetched from the server where the node cannot, or must not, read them,
checked by sha256 and cached on the node), then the worker is started with a config whose paths
are the node's. A failure to fetch, or a cancel before the worker started, is written as the job's
outcome in the same report files the worker would have written, so the server reads one story.

The worker dies with the actor (``prctl``'s parent-death signal), like a replica's process: a
killed actor or a lost node never leaves a job training that no control plane follows.

Plain Python, without ``ray``: the provider wraps the class with ``ray.remote``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Protocol

from enginehouse.artifacts import DigestCache
from enginehouse.core.model_names import looks_like_local_path
from enginehouse.providers.local_process import tail_lines, terminate_group
from enginehouse.providers.ray_replica import die_with_parent, node_facts
from enginehouse.runtime.artifacts import ArtifactFetcher, ArtifactFetchError, node_cache_dir
from enginehouse.training.report import OutcomeStatus, read_report, write_outcome

log = logging.getLogger(__name__)

# How long ``manifest`` waits for a checkpoint's first reading: the server's call gives it a minute
# (``ray_training.CALL_TIMEOUT_S``), and a call answered "still reading" counts as a failed pass.
MANIFEST_WAIT_S = 45.0

CONFIG_FILE = "config.json"
LOG_FILE = "train.log"
# Config keys that name a directory (or a Hub id), and those that name a file, of the server's.
DIRECTORY_KEYS = ("base_model", "init_checkpoint", "baseline_checkpoint")
FILE_KEYS = ("train_path", "test_path")


class Resolver(Protocol):
    """Where a server path is read on this node (``ArtifactFetcher``)."""

    def resolve(self, source: str) -> str: ...

    def resolve_file(self, source: str) -> str: ...


def localize_config(config: dict[str, Any], resolver: Resolver | None, output_dir: str) -> dict[str, Any]:
    """``config`` (the server's) with every path one this node reads, and its output here."""
    local = {**config, "output_dir": output_dir}
    if resolver is None:  # the node sees the server's paths as they are
        return local
    for key in DIRECTORY_KEYS:
        if local.get(key):
            local[key] = resolver.resolve(local[key])
    for key in FILE_KEYS:
        if local.get(key):
            local[key] = resolver.resolve_file(local[key])
    return local


def fetched_paths(config: dict[str, Any]) -> list[str]:
    """The server paths of ``config`` a job may fetch (what its artifact grant names)."""
    return [config[key] for key in (*DIRECTORY_KEYS, *FILE_KEYS) if isinstance(config.get(key), str)
            and looks_like_local_path(config[key])]


class TrainingProcess:
    """One fine-tuning job on this node; what the provider asks of it through the actor."""

    def __init__(self, job_id: str, config: dict[str, Any], fetch: dict[str, str] | None, job_root: str) -> None:
        self.job_id = job_id
        _host, self.node_id = node_facts()
        self.job_dir = Path(job_root) / job_id
        self.job_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.job_dir / LOG_FILE
        self.process: subprocess.Popen[bytes] | None = None
        self._failure: str | None = None  # why it ended before a worker ran
        # One cache for the actor's life: a checkpoint is read for its digests once, and a reading
        # that outlasts one call goes on for the next (a fresh cache per call started it over).
        self._digests = DigestCache(wait_s=MANIFEST_WAIT_S)
        self._cancelled = False
        self._lock = threading.Lock()
        self._started = threading.Thread(target=self._start, args=(config, fetch), name="prepare", daemon=True)
        self._started.start()

    def describe(self) -> dict[str, str]:
        return {"job_id": self.job_id, "node_id": self.node_id, "job_dir": str(self.job_dir)}

    # -- starting ----------------------------------------------------------------------------

    def _start(self, config: dict[str, Any], fetch: dict[str, str] | None) -> None:
        try:
            self._prepare_and_launch(config, fetch)
        except ArtifactFetchError as exc:
            self._end_before_worker("Failed", f"the job's files could not be brought to its node: {exc}")
        except Exception as exc:  # whatever it was, the job must end saying so, never hang as running
            log.exception("training job %s could not start", self.job_id)
            self._end_before_worker("Failed", f"the job could not start on its node: {exc}")

    def _prepare_and_launch(self, config: dict[str, Any], fetch: dict[str, str] | None) -> None:
        if fetch is not None:
            self._note(f"bringing the job's files to node {self.node_id} (fetched from the server unless the "
                       f"node reads them itself)")
        local = localize_config(config, _fetcher(fetch), str(self.job_dir))
        (self.job_dir / CONFIG_FILE).write_text(json.dumps(local, indent=2), encoding="utf-8")
        command = [sys.executable, "-m", "enginehouse.training", str(self.job_dir / CONFIG_FILE)]
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
        with self._lock:
            if self._cancelled:
                self._end_before_worker("Cancelled", None)
                return
            with open(self.log_path, "ab") as log_file:
                self.process = process = subprocess.Popen(
                    command, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                    start_new_session=True, preexec_fn=die_with_parent)
        # The parent-death signal follows the thread that started the worker, not the actor's
        # process: this thread must outlive the worker, or the worker is killed as it ends.
        process.wait()

    def _note(self, line: str) -> None:
        with open(self.log_path, "a", encoding="utf-8") as log_file:
            log_file.write(f"{line}\n")

    def _end_before_worker(self, status: OutcomeStatus, reason: str | None) -> None:
        ended = reason or "cancelled before its worker started"
        self._note(ended)
        write_outcome(self.job_dir, status, reason)
        self._failure = ended  # last: poll() reports the end only once the outcome is written

    # -- what the server reads ---------------------------------------------------------------

    def poll(self) -> dict[str, Any]:
        """Whether it ended (``exit``: [code, reason], or None) and what its worker reported."""
        exit_ = self._exit()  # before the report: a worker writes its outcome, then ends
        report = read_report(self.job_dir)
        return {"exit": exit_, "progress": report.progress, "checkpoints": report.checkpoints,
                "outcome": report.outcome, "baseline": report.baseline}

    def _exit(self) -> list[Any] | None:
        if self.process is None:
            return None if self._started.is_alive() or self._failure is None else [None, self._failure]
        code = self.process.poll()
        return None if code is None else [code, f"the training process exited (code {code})"]

    def manifest(self, name: str) -> list[dict[str, Any]]:
        """The files of the job directory's entry ``name`` (a checkpoint) with their sizes and sha256."""
        return [entry.to_dict() for entry in self._digests.manifest(self._inside(name))]

    def read(self, name: str, file_name: str, offset: int, length: int) -> bytes:
        """``length`` bytes from ``offset`` of the file ``file_name`` of the entry ``name``."""
        with open(self._inside(name, file_name), "rb") as handle:
            handle.seek(offset)
            return handle.read(length)

    def _inside(self, *parts: str) -> Path:
        """A path under the job directory, refusing any that would leave it."""
        path = self.job_dir.joinpath(*parts).resolve()
        if not path.is_relative_to(self.job_dir.resolve()) or path == self.job_dir.resolve():
            raise ValueError(f"{'/'.join(parts)!r} is not inside the job's directory")
        return path

    def log_tail(self, max_lines: int) -> list[str] | None:
        return tail_lines(self.log_path, max_lines)

    # -- ending ------------------------------------------------------------------------------

    def stop(self, grace_s: float) -> None:
        with self._lock:
            self._cancelled = True
            process = self.process
        if process is not None and process.poll() is None:
            terminate_group(process.pid, grace_s, lambda: process.poll() is not None)
            process.wait(timeout=5)

    def remove(self) -> None:
        """Delete the job directory from the node (once the server has what it needs of it)."""
        shutil.rmtree(self.job_dir, ignore_errors=True)


def _fetcher(fetch: dict[str, str] | None) -> ArtifactFetcher | None:
    """The fetcher of the job's files from ``fetch`` ({server_url, secret, mode, routes}), or None."""
    if fetch is None:
        return None
    return ArtifactFetcher(fetch["server_url"].rstrip("/"), fetch["secret"], node_cache_dir(),
                           "always" if fetch["mode"] == "always" else "missing", routes=fetch["routes"])
