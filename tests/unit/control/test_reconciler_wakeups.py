"""When the reconciler steps an engine: the pure timer an engine's step sets, the database telling
the reconciler which engines a commit changed, and the loop stepping only those (one change costs
one engine's step, however many engines there are)."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from enginehouse.core.specs import EngineSpec
from enginehouse.core.status import EngineStatus
from enginehouse.db.models import EngineModel
from enginehouse.db.session import Database
from enginehouse.providers.local import LocalProvider
from enginehouse.reconciler.loop import Reconciler
from enginehouse.reconciler.policy import next_step_in
from enginehouse.services import engines, orgs
from enginehouse.services.status import switch_engine_status
from tests.integration.harness import wait_for

NOW = datetime(2026, 3, 2, 9, 30, tzinfo=timezone.utc)  # a Monday


def _schedule(start: datetime) -> dict[str, object]:
    """A daily one-minute window starting at ``start`` (UTC)."""
    end = start + timedelta(minutes=1)
    return {"management_type": "schedule", "management_config": {
        "timezone": "UTC", "start_time": start.strftime("%H:%M"), "end_time": end.strftime("%H:%M")}}


@pytest.mark.parametrize("status", [EngineStatus.PROVISIONING, EngineStatus.ACTIVE, EngineStatus.DEACTIVATING,
                                    EngineStatus.REACTIVATING, EngineStatus.DELETING])
def test_an_engine_on_the_move_is_stepped_again_soon(status: EngineStatus) -> None:
    assert next_step_in(status, None, False, None, None, NOW, 0.5) == 0.5


def test_a_sleeping_engine_with_a_replica_left_is_stepped_again_soon() -> None:
    assert next_step_in(EngineStatus.INACTIVE, None, True, None, None, NOW, 0.5) == 0.5


@pytest.mark.parametrize("status", [EngineStatus.INACTIVE, EngineStatus.FAILED])
def test_an_engine_at_rest_waits_for_a_change(status: EngineStatus) -> None:
    assert next_step_in(status, None, False, None, None, NOW, 0.5) is None


def test_a_sleeping_engine_on_a_schedule_is_stepped_when_its_window_opens() -> None:
    management = _schedule(NOW + timedelta(hours=3))
    assert next_step_in(EngineStatus.INACTIVE, management, False, None, None, NOW, 0.5) == 3 * 3600
    # Held down by hand until tomorrow's window: the schedule moves it only after that.
    hold = NOW + timedelta(days=1, hours=4)
    due = next_step_in(EngineStatus.INACTIVE, management, False, None, hold, NOW, 0.5)
    assert due == (NOW + timedelta(days=2, hours=3) - NOW).total_seconds()


def _organization(database: Database) -> str:
    with database.session() as session:
        orgs.create_organization(session, "acme")
        return orgs.create_api_key(session, "acme").organization_id


def test_a_commit_tells_the_listeners_which_engines_changed(database: Database) -> None:
    org_id = _organization(database)
    told: list[set[str]] = []
    database.on_engine_change(told.append)
    spec = EngineSpec(name="one", base_model="/models/base", task_type="text-generation")
    with database.session() as session:
        engine_id = engines.create_engine(session, org_id, spec).id
    assert told == [{engine_id}]
    with database.session(announce=False) as session:  # the reconciler's own writes
        engine = session.get(EngineModel, engine_id)
        assert engine is not None
        switch_engine_status(session, engine, EngineStatus.ACTIVE, "replicas ready")
    with pytest.raises(RuntimeError), database.session() as session:  # rolled back: nothing changed
        engines.deactivate_engine(session, org_id, engine_id, manual=True)
        raise RuntimeError("the request failed after its write")
    with database.session() as session:
        assert session.get(EngineModel, engine_id).status == "Active"  # type: ignore[union-attr]
    assert told == [{engine_id}]


def test_one_change_steps_one_engine_however_many_there_are(database: Database, tmp_path: Path) -> None:
    org_id = _organization(database)
    # Sleeping engines on a schedule whose window opens hours from now: each needs one step to
    # learn when, and then nothing until it opens.
    opens = datetime.now(timezone.utc) + timedelta(hours=6)
    engine_ids = []
    with database.session() as session:
        for index in range(12):
            spec = EngineSpec.model_validate({"name": f"sleepy-{index}", "base_model": "/models/base",
                                              "task_type": "text-generation",
                                              "resource_management_config": _schedule(opens)})
            engine = engines.create_engine(session, org_id, spec)
            switch_engine_status(session, engine, EngineStatus.ACTIVE)
            engines.deactivate_engine(session, org_id, engine.id, manual=False)
            switch_engine_status(session, engine, EngineStatus.INACTIVE)
            engine_ids.append(engine.id)
    reconciler = Reconciler(database, LocalProvider(tmp_path, find_gpus=lambda: []), interval_s=0.05,
                            resync_s=3600)
    reconciler.start()
    try:
        wait_for(lambda: reconciler.metrics.steps_run() >= len(engine_ids), timeout=20, what="a first step of each")
        time.sleep(1.0)  # twenty busy intervals: a timer or a pass over every engine would show
        settled = reconciler.metrics.steps_run()
        assert settled == len(engine_ids)
        with database.session() as session:
            engines.delete_engine(session, org_id, engine_ids[5])

        def gone(engine_id: str) -> bool:
            with database.session() as session:
                return session.get(EngineModel, engine_id) is None

        wait_for(lambda: gone(engine_ids[5]), timeout=20, what="the deleted engine's rows to go")
        time.sleep(2.5)  # past the next read of the events table
        # Deleting (rows removed), then a look that finds it gone (and one more when the events
        # table shows its removal): the other engines were never stepped.
        stepped = reconciler.metrics.steps_run()
        assert stepped - settled <= 3
        # Another process's write is announced by nothing but its events: read within seconds.
        elsewhere = Database(database.url)
        try:
            with elsewhere.session() as session:
                engines.delete_engine(session, org_id, engine_ids[7])
        finally:
            elsewhere.close()
        wait_for(lambda: gone(engine_ids[7]), timeout=20, what="the other process's deletion to be carried out")
        time.sleep(2.5)
        assert reconciler.metrics.steps_run() - stepped <= 3
    finally:
        reconciler.stop(stop_replicas=False)
