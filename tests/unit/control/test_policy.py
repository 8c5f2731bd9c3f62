"""The reconciler's pure decisions, with plain values."""

from __future__ import annotations

import pytest

from enginehouse.core.status import DeploymentKind, DeploymentStatus, EngineStatus
from enginehouse.reconciler.policy import (
    DeploymentFacts,
    ReplicaFacts,
    at_rest,
    derive_deployment_status,
    derive_engine_status,
    desired_adapters,
    plan_adapters,
)

E, D = EngineStatus, DeploymentStatus


def adapter(name: str = "a", status: D = D.DEPLOYING, path: str = "/ckpt/a") -> DeploymentFacts:
    return DeploymentFacts(f"dp-{name}", name, DeploymentKind.FINE_TUNED, status, path)


def base(status: D = D.DEPLOYED) -> DeploymentFacts:
    return DeploymentFacts("dp-base", "eng", DeploymentKind.BASE, status, None)


def ready(**loaded: str) -> ReplicaFacts:
    return ReplicaFacts("r1", ready=True, exited=False, loaded=dict(loaded))


def test_plan_adapters_loads_missing_and_unloads_removed() -> None:
    load, unload = plan_adapters({"a": "/a", "b": "/b"}, {"b": "/b", "c": "/c"})
    assert load == [("a", "/a")]
    assert unload == ["c"]


def test_plan_adapters_reloads_a_name_whose_path_changed() -> None:
    load, unload = plan_adapters({"a": "/new"}, {"a": "/old"})
    assert unload == ["a"] and load == [("a", "/new")]


def test_desired_adapters_skip_base_and_failed() -> None:
    facts = [base(), adapter("a"), adapter("b", D.FAILED, "/b")]
    assert desired_adapters(facts) == {"a": "/ckpt/a"}


def test_engine_becomes_active_when_a_replica_is_ready() -> None:
    assert derive_engine_status(E.PROVISIONING, [ready()], None) == (E.ACTIVE, None)
    assert derive_engine_status(E.REACTIVATING, [ready()], None) == (E.ACTIVE, None)
    starting = ReplicaFacts("r1", ready=False, exited=False)
    assert derive_engine_status(E.PROVISIONING, [starting], None) is None


def test_engine_fails_on_a_declared_failure() -> None:
    assert derive_engine_status(E.PROVISIONING, [], "no such model") == (E.FAILED, "no such model")


def test_deactivating_engine_is_inactive_once_no_replica_lives() -> None:
    live = ReplicaFacts("r1", ready=True, exited=False)
    assert derive_engine_status(E.DEACTIVATING, [live], None) is None
    assert derive_engine_status(E.DEACTIVATING, [], None) == (E.INACTIVE, None)


@pytest.mark.parametrize(
    ("engine", "current", "replicas", "expected"),
    [
        (E.PROVISIONING, D.PENDING, [], D.PENDING),
        (E.ACTIVE, D.PENDING, [ready()], D.DEPLOYING),
        (E.ACTIVE, D.DEPLOYING, [ready(a="/ckpt/a")], D.DEPLOYED),
        (E.ACTIVE, D.DEPLOYED, [], D.DEPLOYING),  # a replica died: healing
        (E.DEACTIVATING, D.DEPLOYED, [ready(a="/ckpt/a")], D.DEACTIVATED),
        (E.INACTIVE, D.DEPLOYED, [], D.DEACTIVATED),
        (E.REACTIVATING, D.REACTIVATING, [], D.REACTIVATING),
        (E.ACTIVE, D.REACTIVATING, [ready()], D.REACTIVATING),
        (E.ACTIVE, D.REACTIVATING, [ready(a="/ckpt/a")], D.DEPLOYED),
    ],
)
def test_fine_tuned_deployment_status(engine: E, current: D, replicas: list[ReplicaFacts], expected: D) -> None:
    status, _reason = derive_deployment_status(engine, None, adapter(status=current), replicas, None)
    assert status is expected


def test_load_error_fails_only_that_deployment() -> None:
    status, reason = derive_deployment_status(E.ACTIVE, None, adapter(), [ready()], "rank too high")
    assert (status, reason) == (D.FAILED, "rank too high")


def test_failed_deployment_stays_failed() -> None:
    status, _ = derive_deployment_status(E.ACTIVE, None, adapter(status=D.FAILED), [ready(a="/ckpt/a")], None)
    assert status is D.FAILED


def test_base_deployment_follows_replica_readiness() -> None:
    assert derive_deployment_status(E.ACTIVE, None, base(), [ready()], None)[0] is D.DEPLOYED
    assert derive_deployment_status(E.ACTIVE, None, base(), [], None)[0] is D.DEPLOYING
    assert derive_deployment_status(E.FAILED, "boom", base(), [], None) == (D.FAILED, "engine failed: boom")


def test_single_model_base_is_deactivated_while_replaced() -> None:
    fine_tuned = adapter("ft", D.DEPLOYING, "/ckpt/ft")
    from enginehouse.reconciler.policy import single_model_replacement
    assert single_model_replacement([base(), fine_tuned]) == "ft"
    assert single_model_replacement([base(), adapter("ft", D.FAILED)]) is None
    status, reason = derive_deployment_status(E.ACTIVE, None, base(), [ready()], None, replaced_by="ft")
    assert status is D.DEACTIVATED and "ft" in (reason or "")


def test_single_model_base_comes_back_when_the_fine_tune_goes() -> None:
    serving_ft = ReplicaFacts("r1", ready=True, exited=False, loaded={"ft": "/ckpt/ft"}, base_served=False)
    back = ReplicaFacts("r1", ready=True, exited=False, base_served=True)
    was_replaced = base(D.DEACTIVATED)
    assert derive_deployment_status(E.ACTIVE, None, was_replaced, [serving_ft], None)[0] is D.REACTIVATING
    assert derive_deployment_status(E.ACTIVE, None, base(D.REACTIVATING), [back], None)[0] is D.DEPLOYED


def test_only_sleeping_engines_with_nothing_to_watch_are_at_rest() -> None:
    schedule = {"management_type": "schedule", "management_config": {"start_time": "09:00", "end_time": "17:00"}}
    timeout = {"management_type": "inactive_timeout", "management_config": {"inactive_duration": 60}}
    assert at_rest(EngineStatus.INACTIVE, None, has_replicas=False)
    assert at_rest(EngineStatus.FAILED, timeout, has_replicas=False)
    # A schedule may open its window at any minute; a replica may be left to stop.
    assert not at_rest(EngineStatus.INACTIVE, schedule, has_replicas=False)
    assert not at_rest(EngineStatus.FAILED, None, has_replicas=True)
    for status in (EngineStatus.PROVISIONING, EngineStatus.ACTIVE, EngineStatus.DEACTIVATING,
                   EngineStatus.REACTIVATING, EngineStatus.DELETING):
        assert not at_rest(status, None, has_replicas=False)


def test_a_transient_adapter_load_error_is_retried_with_backoff_then_fails() -> None:
    from enginehouse.reconciler.policy import LoadTries, after_load_error

    tries, failure = after_load_error(LoadTries(), "ReadTimeout", now=100.0, max_tries=3, backoff_base_s=1.0)
    assert failure is None and tries == LoadTries(1, 101.0)
    tries, failure = after_load_error(tries, "the replica answered 503", now=102.0, max_tries=3, backoff_base_s=1.0)
    assert failure is None and tries == LoadTries(2, 104.0)
    tries, failure = after_load_error(tries, "the replica answered 503", now=105.0, max_tries=3, backoff_base_s=1.0)
    assert failure == "could not load the adapter (3 tries): the replica answered 503"
