"""Fine-tuning jobs as subprocesses of this machine (``python -m enginehouse.training``).

Each job has a directory, ``<data dir>/training/<job id>/``, holding its config, its log, what
its worker reports (``enginehouse.training.report``: progress, checkpoints, outcome) and its
checkpoints. ``worker.json`` there names the worker process (pid and start time) while the job is
this provider's: like a replica, the worker runs in its own process group and outlives a crashed
server, and the next server on the same data directory finds it again from that file. Releasing a
job removes only ``worker.json``; the checkpoints stay where deployments point at them.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from enginehouse.providers.base import LaunchError, ProviderTraining, ReplicaExit, TrainingLaunch
from enginehouse.providers.local_process import is_running, process_start_time, tail_lines, terminate_group
from enginehouse.providers.local_records import record_path
from enginehouse.providers.trainer import worker_config
from enginehouse.training.report import read_report

log = logging.getLogger(__name__)

WORKER_FILE = "worker.json"
CONFIG_FILE = "config.json"
LOG_FILE = "train.log"


@dataclass
class _Worker:
    job_id: str
    pid: int
    start_time: int | None
    # The process handle when this server started it (it knows the exit code and reaps it);
    # None for a worker found after a restart.
    child: subprocess.Popen[bytes] | None
    exit: ReplicaExit | None = None


class LocalTrainer:
    def __init__(self, data_dir: Path, threads: int = 0) -> None:
        self.root = data_dir / "training"
        self.threads = threads
        self._workers: dict[str, _Worker] | None = None  # read from disk on first use
        self._lock = threading.Lock()

    def job_dir(self, job_id: str) -> Path:
        # record_path refuses anything that is not an id (no "..", no "/").
        return record_path(self.root, job_id).with_suffix("")

    def _table(self) -> dict[str, _Worker]:
        """The jobs this provider has; call with the lock held. The first call finds those a
        previous server on this data directory left."""
        if self._workers is None:
            self._workers = {}
            for path in sorted(self.root.glob(f"*/{WORKER_FILE}")) if self.root.is_dir() else []:
                try:
                    fields = json.loads(path.read_text(encoding="utf-8"))
                    worker = _Worker(str(fields["job_id"]), int(fields["pid"]), fields.get("start_time"), None)
                except (OSError, ValueError, TypeError, KeyError) as exc:
                    log.warning("ignoring unreadable training record %s: %s", path, exc)
                    continue
                log.info("found training job %s (pid %s) left by a previous server", worker.job_id, worker.pid)
                self._workers[worker.job_id] = worker
        return self._workers

    def launch(self, launch: TrainingLaunch) -> None:
        try:
            job_dir = self.job_dir(launch.job_id)
            job_dir.mkdir(parents=True, exist_ok=True)
            config = worker_config(launch, str(job_dir), self.threads)
            (job_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2), encoding="utf-8")
        except (OSError, ValueError) as exc:
            raise LaunchError(f"cannot prepare the job's directory: {getattr(exc, 'strerror', None) or exc}",
                              permanent=True) from None
        command = [sys.executable, "-m", "enginehouse.training", str(job_dir / CONFIG_FILE)]
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
        try:
            with open(job_dir / LOG_FILE, "ab") as log_file:
                process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT,
                                           stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        except OSError as exc:
            raise LaunchError(f"cannot start the training process: {exc.strerror or exc}", permanent=False) from None
        worker = _Worker(launch.job_id, process.pid, process_start_time(process.pid), process)
        record = {"job_id": worker.job_id, "pid": worker.pid, "start_time": worker.start_time}
        (job_dir / WORKER_FILE).write_text(json.dumps(record), encoding="utf-8")
        with self._lock:
            self._table()[launch.job_id] = worker
        log.info("started training job %s (pid %s)", launch.job_id, process.pid)

    def list(self) -> list[ProviderTraining]:
        with self._lock:
            workers = list(self._table().values())
        trainings = []
        for worker in workers:
            exit_ = _exit(worker)  # before reading the report: a worker writes its outcome, then ends
            report = read_report(self.job_dir(worker.job_id))
            trainings.append(ProviderTraining(worker.job_id, report.progress, report.checkpoints,
                                              report.outcome, exit_, report.baseline))
        return trainings

    def stop(self, job_id: str) -> None:
        with self._lock:
            worker = self._table().get(job_id)
        if worker is None or _exit(worker) is not None:
            return
        child = worker.child
        if child is not None:
            terminate_group(child.pid, 10.0, lambda: child.poll() is not None)
            child.wait(timeout=1)
        else:
            terminate_group(worker.pid, 10.0, lambda: not is_running(worker.pid, worker.start_time))

    def release(self, job_id: str) -> None:
        self.stop(job_id)
        with self._lock:
            self._table().pop(job_id, None)
        try:
            (self.job_dir(job_id) / WORKER_FILE).unlink()
        except (FileNotFoundError, ValueError):
            pass

    def log_tail(self, job_id: str, max_lines: int) -> list[str] | None:
        try:
            path = self.job_dir(job_id) / LOG_FILE
        except ValueError:  # not a job id
            return None
        return tail_lines(path, max_lines)


def _exit(worker: _Worker) -> ReplicaExit | None:
    if worker.exit is not None:
        return worker.exit
    if worker.child is not None:
        code = worker.child.poll()
        if code is None:
            return None
    elif is_running(worker.pid, worker.start_time):
        return None
    else:
        code = None  # a previous server's child: its exit code went with that server
    reason = f"the training process exited (code {code})" if code is not None else "the training process is gone"
    worker.exit = ReplicaExit(code=code, reason=reason, permanent=False)
    return worker.exit

