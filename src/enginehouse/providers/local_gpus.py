"""The GPUs of this machine, as the replicas' torch sees them.

Asked in a child process: importing torch costs the server seconds and hundreds of megabytes,
and initialising CUDA would hold memory on the first GPU for as long as the server runs. Without
an NVIDIA driver no child is started at all.
"""

from __future__ import annotations

import functools
import json
import logging
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 60.0
_PROBE = (
    "import json, torch\n"
    "count = torch.cuda.device_count() if torch.cuda.is_available() else 0\n"
    "props = [torch.cuda.get_device_properties(i) for i in range(count)]\n"
    "print(json.dumps([[p.name, p.total_memory] for p in props]))\n"
)


@dataclass(frozen=True)
class LocalGpu:
    index: int
    name: str
    memory_bytes: int


def nvidia_driver_present() -> bool:
    return Path("/proc/driver/nvidia/version").exists() or shutil.which("nvidia-smi") is not None


def parse_probe(output: str) -> list[LocalGpu]:
    devices = json.loads(output.strip().splitlines()[-1])
    return [LocalGpu(i, str(name), int(memory)) for i, (name, memory) in enumerate(devices)]


@functools.cache
def _probe() -> tuple[LocalGpu, ...]:
    return tuple(_ask_torch())


def probe_local_gpus() -> list[LocalGpu]:
    """Asked once per process: the GPUs do not change while it runs (and tests build many
    providers)."""
    return list(_probe())


def _ask_torch() -> list[LocalGpu]:
    """Never raises: a machine whose GPUs cannot be asked about has none to offer."""
    if not nvidia_driver_present():
        return []
    try:
        done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                              timeout=PROBE_TIMEOUT_S, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            log.warning("could not list local GPUs: %s", done.stderr.strip()[-500:])
            return []
        return parse_probe(done.stdout)
    except (OSError, subprocess.SubprocessError, ValueError, TypeError, IndexError) as exc:
        log.warning("could not list local GPUs: %s", exc)
        return []
