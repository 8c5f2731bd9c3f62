"""The process facts the local provider needs, read from /proc: is a recorded replica process
still that process, how did it end (from its log), and ending its process group."""

from __future__ import annotations

import os
import signal
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

# The line a replica prints on stderr before exiting when it cannot come up for a reason that a
# restart will not fix (a model that does not load, options it cannot honour).
REPLICA_ERROR_MARKER = "ENGINEHOUSE_REPLICA_ERROR:"


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat from field 3 (state) on; the command name before it may hold spaces
    and parentheses, so the split is after its last ')'."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()


def process_start_time(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks after boot (field 22); None when it cannot be read."""
    fields = _stat_fields(pid)
    try:
        return int(fields[19]) if fields else None  # field 22 is the 20th after the name
    except (IndexError, ValueError):
        return None


def is_running(pid: int, start_time: int | None) -> bool:
    """True when ``pid`` is alive, not a zombie, and (when known) started at ``start_time``:
    the same pid with another start time is another process that reused it."""
    fields = _stat_fields(pid)
    if not fields or fields[0] == "Z":
        return False
    return start_time is None or process_start_time(pid) == start_time


def declared_error(log_path: str | None) -> str | None:
    """The reason a replica gave for not coming up (the last marker line of its log), if any."""
    if not log_path:
        return None
    try:
        with open(log_path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 16384))
            tail = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    for line in reversed(tail.splitlines()):
        if REPLICA_ERROR_MARKER in line:
            return line.split(REPLICA_ERROR_MARKER, 1)[1].strip()
    return None


def terminate_group(pid: int, grace_s: float, gone: Callable[[], bool]) -> None:
    """SIGTERM the replica's process group, SIGKILL it after ``grace_s`` if ``gone`` is not true."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        except PermissionError:
            os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if gone():
                return
            time.sleep(0.05)


def tail_lines(path: Path | str, max_lines: int) -> list[str] | None:
    """The last ``max_lines`` lines of the log file at ``path``; None when it cannot be read."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return [line.rstrip("\n") for line in deque(handle, maxlen=max_lines)]
    except OSError:
        return None
