"""The replica's helper threads (asyncio's default executor) run torch's parallel ops on
themselves alone, so none keeps an OpenMP pool beside the engine thread's; every other thread's
count, and the count a new thread takes, stay as they were."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from enginehouse.runtime.helper_threads import _loaded_openmp_libraries, helper_executor

# Large enough that torch splits the op across its threads.
_PARALLEL_SIZE = 4_000_000


def _native_threads() -> set[str]:
    return set(os.listdir("/proc/self/task"))


def _threads_added_by(run_on_thread: Callable[[Callable[[], int]], int]) -> int:
    """Native threads that started in this process while the thread ``run_on_thread`` uses ran
    parallel ops (measured on it, while it still lives). Started, not the count's change: another
    test's thread may end meanwhile."""
    values = torch.ones(_PARALLEL_SIZE)

    def work() -> int:
        before = _native_threads()
        for _ in range(3):
            (values * 2).sum()
        return len(_native_threads() - before)

    return run_on_thread(work)


def _on_plain_thread(work: Callable[[], int]) -> int:
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(work()))
    thread.start()
    thread.join()
    return result[0]


@pytest.fixture
def two_torch_threads() -> Iterator[None]:
    if not Path("/proc/self/task").is_dir() or not _loaded_openmp_libraries():
        pytest.skip("needs Linux's /proc and a torch built with OpenMP")
    kept = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(kept)


def test_a_helper_thread_starts_no_pool_and_changes_no_other_count(two_torch_threads: None) -> None:
    # The control: a plain thread's parallel ops start a pool of its own.
    assert _threads_added_by(_on_plain_thread) >= 1
    with helper_executor(max_workers=1) as pool:
        assert _threads_added_by(lambda work: pool.submit(work).result()) == 0
        assert pool.submit(torch.get_num_threads).result() == 1
    assert torch.get_num_threads() == 2
    counts: list[int] = []
    _on_plain_thread(lambda: counts.append(torch.get_num_threads()) or 0)
    assert counts == [2]


def test_the_replicas_to_thread_runs_on_a_helper_thread(tmp_path: Path, two_torch_threads: None) -> None:
    import asyncio

    from fastapi.testclient import TestClient

    from enginehouse.demo.tiny_encoders import build_tiny_bert
    from enginehouse.runtime.embedding.runner import EmbeddingRunner
    from enginehouse.runtime.options import RuntimeOptions
    from enginehouse.runtime.server import create_app

    runner = EmbeddingRunner(base_model=str(build_tiny_bert(tmp_path / "bert")), served_name="emb",
                             options=RuntimeOptions())
    runner.load()
    with TestClient(create_app(runner)) as client:
        assert client.portal is not None
        name = client.portal.call(asyncio.to_thread, lambda: threading.current_thread().name)
        count = client.portal.call(asyncio.to_thread, torch.get_num_threads)
    assert name.startswith("replica-helper") and count == 1
