"""Two writers that read the same status: an API deactivate and the reconciler failing the engine.
On a real database, each in its own thread and transaction, exactly one wins; the other is told,
and nothing it wrote lands."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from sqlalchemy.orm import Session

from enginehouse.core.specs import EngineSpec
from enginehouse.core.status import EngineStatus
from enginehouse.db.models import EngineModel
from enginehouse.db.session import Database
from enginehouse.services import engines, orgs
from enginehouse.services.pages import PageRequest
from enginehouse.services.status import StatusChangedError, switch_engine_status


def _active_engine(database: Database) -> tuple[str, str]:
    with database.session() as session:
        orgs.create_organization(session, "acme")
        org_id = orgs.create_api_key(session, "acme").organization_id
        spec = EngineSpec(name="raced", base_model="/models/base", task_type="text-generation")
        engine = engines.create_engine(session, org_id, spec)
        switch_engine_status(session, engine, EngineStatus.ACTIVE, "replicas ready")
        return org_id, engine.id


@pytest.mark.parametrize("round_", range(3))
def test_an_api_write_and_a_reconciler_write_cannot_both_win(database: Database, round_: int) -> None:
    org_id, engine_id = _active_engine(database)
    both_read = threading.Barrier(2, timeout=30)
    outcomes: dict[str, str] = {}

    def writer(name: str, write: Callable[[Session, EngineModel], None]) -> None:
        try:
            with database.session() as session:
                engine = session.get(EngineModel, engine_id)
                assert engine is not None and engine.status == "Active"
                both_read.wait()  # each has read Active; now both write
                write(session, engine)
            outcomes[name] = "won"
        except StatusChangedError:
            outcomes[name] = "lost"

    def api(session: Session, engine: EngineModel) -> None:
        engines.deactivate_engine(session, org_id, engine.id)

    def reconciler(session: Session, engine: EngineModel) -> None:
        switch_engine_status(session, engine, EngineStatus.FAILED, "replica keeps failing")

    threads = [threading.Thread(target=writer, args=("api", api)),
               threading.Thread(target=writer, args=("reconciler", reconciler))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(outcomes.values()) == ["lost", "won"], outcomes
    winner = next(name for name, outcome in outcomes.items() if outcome == "won")
    with database.session() as session:
        engine = session.get(EngineModel, engine_id)
        assert engine is not None
        assert engine.status == {"api": "Deactivating", "reconciler": "Failed"}[winner]
        events = engines.engine_events(session, org_id, engine_id, PageRequest()).items
        # One change out of Active, the winner's: the loser recorded nothing.
        assert [(e.from_status, e.to_status) for e in events if e.from_status == "Active"] == [
            ("Active", engine.status)]
