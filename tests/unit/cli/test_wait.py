"""``wait_until`` with scripted states: no server, no sleeping (interval 0)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from enginehouse.cli.errors import ApiError, CliError
from enginehouse.cli.wait import ENGINE_SETTLED, fetch_or_none, gone, settles_at, wait_until


def _states(*states: dict | None) -> Callable[[], dict | None]:
    remaining = list(states)
    return lambda: remaining.pop(0) if len(remaining) > 1 else remaining[0]


def test_stops_at_the_first_settled_status() -> None:
    fetch = _states({"status": "Provisioning"}, {"status": "Active"}, {"status": "Failed"})
    final = wait_until(fetch, settles_at(ENGINE_SETTLED), "engine e", timeout=60, live=False,
                       interval=0)
    assert final == {"status": "Active"}


def test_a_404_reads_as_gone() -> None:
    def fetch() -> dict:
        raise ApiError("engine not found", 404)

    assert wait_until(fetch_or_none(fetch), gone, "engine e", timeout=60, live=False) is None


def test_other_api_errors_are_not_swallowed() -> None:
    def fetch() -> dict:
        raise ApiError("invalid API key", 401)

    with pytest.raises(ApiError):
        fetch_or_none(fetch)()


def test_timeout_names_the_last_status() -> None:
    with pytest.raises(CliError, match="Deleting"):
        wait_until(lambda: {"status": "Deleting"}, gone, "engine e", timeout=0, live=False)


def test_a_failed_engine_prints_its_json_then_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    from enginehouse.cli.engines import _finish

    failed = {"id": "engine-1", "name": "e", "status": "Failed", "status_reason": "out of memory"}
    with pytest.raises(CliError, match="engine e failed: out of memory"):
        _finish(failed, "e", as_json=True, detailed=False)
    assert '"status": "Failed"' in capsys.readouterr().out
