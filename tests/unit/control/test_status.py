"""The transition tables."""

from __future__ import annotations

import pytest

from enginehouse.core.status import (
    DEPLOYMENT_TRANSITIONS,
    ENGINE_TRANSITIONS,
    DeploymentStatus,
    EngineStatus,
    TransitionError,
    check_deployment_transition,
    check_engine_transition,
)

E, D = EngineStatus, DeploymentStatus


@pytest.mark.parametrize(
    "path",
    [
        [E.PROVISIONING, E.ACTIVE, E.DEACTIVATING, E.INACTIVE, E.REACTIVATING, E.ACTIVE, E.DELETING],
        [E.PROVISIONING, E.FAILED, E.DELETING],
    ],
)
def test_engine_lifecycle_paths_of_the_spec(path: list[E]) -> None:
    for current, new in zip(path, path[1:]):
        check_engine_transition(current, new)


@pytest.mark.parametrize(
    "path",
    [
        [D.PENDING, D.DEPLOYING, D.DEPLOYED],
        [D.DEPLOYED, D.DEACTIVATED, D.REACTIVATING, D.DEPLOYED],
        [D.DEPLOYED, D.DEPLOYING, D.DEPLOYED],
        [D.DEPLOYING, D.FAILED],
    ],
)
def test_deployment_lifecycle_paths_of_the_spec(path: list[D]) -> None:
    for current, new in zip(path, path[1:]):
        check_deployment_transition(current, new)


@pytest.mark.parametrize(("current", "new"), [(E.INACTIVE, E.ACTIVE), (E.DELETING, E.ACTIVE),
                                              (E.FAILED, E.ACTIVE), (E.ACTIVE, E.INACTIVE)])
def test_impossible_engine_transitions_are_refused(current: E, new: E) -> None:
    with pytest.raises(TransitionError) as refused:
        check_engine_transition(current, new)
    assert refused.value.current == current.value


def test_any_engine_status_can_be_deleted_except_deleting_itself() -> None:
    for status, allowed in ENGINE_TRANSITIONS.items():
        assert (E.DELETING in allowed) == (status is not E.DELETING)


def test_failed_deployment_is_terminal() -> None:
    assert DEPLOYMENT_TRANSITIONS[D.FAILED] == frozenset()
    with pytest.raises(TransitionError):
        check_deployment_transition(D.FAILED, D.DEPLOYED)
