"""What the machine was doing: process memory, the CPU each of the benchmark's processes used
during a run, and how much the rest of the machine took.

On a shared 2-core machine a neighbour using one core can cut a run's throughput several-fold
(torch's threads wait for each other at every operation); the benchmark cannot prevent that, so
it measures it and prints it beside each run.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` (VmRSS), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise ValueError(f"no VmRSS for pid {pid}")


def pid_with_argument(argument: str) -> int | None:
    """A live process whose command line contains ``argument`` (e.g. a replica id)."""
    needle = argument.encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "cmdline").read_bytes().split(b"\0"):
                return int(entry.name)
        except OSError:
            continue
    return None


def _busy_machine_s() -> float:
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in fields]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / _TICKS


def _tree_cpu_s(root: int) -> dict[int, float]:
    """CPU seconds (user + system) of ``root`` and every live descendant, by pid."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry.name)
        parents[pid] = int(stat[1])
        times[pid] = (int(stat[11]) + int(stat[12])) / _TICKS
    ours = {root}
    changed = True
    while changed:
        changed = False
        for pid, parent in parents.items():
            if parent in ours and pid not in ours:
                ours.add(pid)
                changed = True
    return {pid: times[pid] for pid in ours if pid in times}


def _role(pid: int) -> str:
    """What one of the benchmark's processes is, for the CPU breakdown."""
    if pid == os.getpid():
        return "bench"  # the load generator, or the model itself for (d) and (f)
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "other"
    if any(b"vllm" in a.lower() for a in argv):
        return "vllm"  # its API server, and its engine core (which names itself VLLM::EngineCore)
    if b"enginehouse.runtime" in argv:
        return "replica"
    if b"enginehouse.training" in argv:
        return "training job"
    if b"bench.finetune_baseline" in argv:
        return "training baseline"
    if b"serve" in argv and any(a.endswith(b"transformers") for a in argv):
        return "transformers serve"
    if b"up" in argv and any(a.endswith(b"enginehouse") for a in argv):
        return "server"  # API, gateway and reconciler
    return "other"


@dataclass(frozen=True)
class CpuReport:
    # Share of the machine's capacity that processes outside the benchmark used.
    others_share: float
    # CPU seconds each of the benchmark's own processes used, by role.
    by_role: dict[str, float]


def _reaped_children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class CpuMeter:
    """Who used the CPU between ``start`` and ``finish``: the benchmark's processes, by role,
    and everything else on the machine."""

    start_wall: float = 0.0
    start_busy: float = 0.0
    start_ours: dict[int, float] | None = None
    start_reaped: float = 0.0

    def start(self) -> CpuMeter:
        self.start_wall = time.monotonic()
        self.start_busy = _busy_machine_s()
        self.start_ours = _tree_cpu_s(os.getpid())
        self.start_reaped = _reaped_children_cpu_s()
        return self

    def finish(self) -> CpuReport:
        wall = time.monotonic() - self.start_wall
        busy = _busy_machine_s() - self.start_busy
        before = self.start_ours or {}
        by_role: dict[str, float] = {}
        now = _tree_cpu_s(os.getpid())
        for pid, cpu_s in now.items():
            role = _role(pid)
            by_role[role] = by_role.get(role, 0.0) + cpu_s - before.get(pid, 0.0)
        # A child that ended meanwhile (a training process) is gone from /proc; once reaped, its
        # CPU shows in this process's children's usage, less what it had used before ``start``.
        gone = sum(cpu_s for pid, cpu_s in before.items() if pid not in now)
        ended = _reaped_children_cpu_s() - self.start_reaped - gone
        if ended > 0:
            by_role["ended"] = ended
        capacity = wall * (os.cpu_count() or 1)
        others = max(0.0, busy - sum(by_role.values())) / capacity if capacity > 0 else 0.0
        return CpuReport(round(others, 3), {k: round(v, 2) for k, v in sorted(by_role.items()) if v > 0})

    def others_share(self) -> float:
        return self.finish().others_share


def others_share_over(window_s: float) -> float:
    meter = CpuMeter().start()
    time.sleep(window_s)
    return meter.others_share()


def wait_until_quiet(threshold: float, max_wait_s: float, window_s: float = 2.0) -> tuple[float, float]:
    """Wait until processes outside the benchmark use at most ``threshold`` of the CPU over a
    ``window_s`` window, or ``max_wait_s`` has passed; (seconds waited, last share seen)."""
    start = time.monotonic()
    while True:
        share = others_share_over(window_s)
        waited = time.monotonic() - start
        if share <= threshold or waited >= max_wait_s:
            return waited, share
