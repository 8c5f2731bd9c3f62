"""Worker threads beside the engine that never start an OpenMP pool of their own.

GNU OpenMP keeps a pool of worker threads for each thread that runs torch's parallel ops, for as
long as that thread lives. While a process holds more OpenMP threads than CPUs, libgomp stops
spinning idle workers, and every op of the engine thread then waits for a sleeping worker to
wake (a 5M model's steps took about twice as long: see ``load_on_passing_thread``). asyncio's
default executor keeps its threads for the process's life, and a large adapter read on one of
them (its dtype conversion is a parallel op) would leave such a pool behind. So the replica's
helper threads run torch's ops on themselves alone.

OpenMP's thread count is per thread, but ``torch.set_num_threads`` also sets the count every
thread takes on its first parallel op; calling it here would change the engine's. The OpenMP
runtime's own ``omp_set_num_threads`` changes only the calling thread's.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

log = logging.getLogger(__name__)

# The OpenMP runtimes torch builds link: GNU's, LLVM's and Intel's.
_OPENMP_LIBRARY = re.compile(r"/lib(gomp|omp|iomp5)[^/]*\.so[^/]*$")


def helper_executor(max_workers: int | None = None) -> ThreadPoolExecutor:
    """A thread pool whose threads run torch's ops single-threaded (adapter reads, tokenizing,
    grammar compiles: work beside the engine, never the engine's own)."""
    return ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="replica-helper",
                              initializer=single_threaded_ops)


def single_threaded_ops() -> None:
    """From now on, torch's parallel ops called on this thread run on it alone; other threads
    keep their counts, and threads started later still take the process's."""
    torch.get_num_threads()  # torch sets a thread's count on its first use: let it happen first
    set_count = _omp_set_num_threads()
    if set_count is not None:
        set_count(1)


@functools.cache
def _omp_set_num_threads():  # type: ignore[no-untyped-def]
    """The loaded OpenMP runtime's ``omp_set_num_threads``; None where none is found (no /proc,
    or a torch built without OpenMP: it then has no per-thread pools to keep away either)."""
    for path in _loaded_openmp_libraries():
        try:
            function = ctypes.CDLL(path).omp_set_num_threads
        except (OSError, AttributeError):
            continue
        function.argtypes, function.restype = [ctypes.c_int], None
        return function
    log.debug("no OpenMP runtime found among the loaded libraries; helper threads keep torch's count")
    return None


def _loaded_openmp_libraries() -> list[str]:
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return []
    paths = {line.split()[-1] for line in maps.splitlines() if _OPENMP_LIBRARY.search(line)}
    return sorted(paths)
