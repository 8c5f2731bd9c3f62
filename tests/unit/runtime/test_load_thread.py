"""A replica loads its model on a thread that ends with the load (``load_on_passing_thread``), so
that the only OpenMP pool left is the engine thread's; what the load raises reaches the caller."""

from __future__ import annotations

import threading

import pytest

from enginehouse.runtime.__main__ import load_on_passing_thread
from enginehouse.runtime.base import ReplicaLoadError


class _Runner:
    def __init__(self, failure: BaseException | None = None) -> None:
        self.failure = failure
        self.loaded_on: threading.Thread | None = None

    def load(self) -> None:
        self.loaded_on = threading.current_thread()
        if self.failure is not None:
            raise self.failure


def test_the_model_is_loaded_on_a_thread_that_has_ended() -> None:
    runner = _Runner()
    load_on_passing_thread(runner)
    assert runner.loaded_on is not None and runner.loaded_on is not threading.current_thread()
    assert not runner.loaded_on.is_alive()


def test_what_the_load_raises_is_raised_to_the_caller() -> None:
    with pytest.raises(ReplicaLoadError, match="no such model"):
        load_on_passing_thread(_Runner(ReplicaLoadError("no such model")))
    with pytest.raises(KeyboardInterrupt):
        load_on_passing_thread(_Runner(KeyboardInterrupt()))
