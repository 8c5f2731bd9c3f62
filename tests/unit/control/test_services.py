"""Services against a real (SQLite) database: what is recorded, and what is refused."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from enginehouse.api.views import engine_to_dict
from enginehouse.core.specs import WEEKDAYS, EngineSpec, TrainingJobSource
from enginehouse.core.status import EngineStatus
from enginehouse.errors import (
    AuthenticationError,
    ConflictError,
    NotFoundError,
    ValidationFailedError,
)
from enginehouse.services import deployments, engines, orgs, training_jobs
from enginehouse.services.pages import PageRequest
from enginehouse.services.status import switch_engine_status
from tests.unit.control.conftest import fake_lora_checkpoint


def engine_spec(name: str = "eng", option: str = "auto") -> EngineSpec:
    return EngineSpec(name=name, base_model="/models/base", task_type="text-generation",
                      deployment_option=option)


def register_job(session: Session, org_id: str, tmp_path: Path, epochs: tuple[int, ...] = (1, 2)):
    spec = training_jobs.TrainingJobSpec(
        name="job", task_type="text-generation", base_model="/models/base",
        checkpoints=[training_jobs.CheckpointSpec(checkpoint=e, path=str(fake_lora_checkpoint(tmp_path / f"e{e}")))
                     for e in epochs],
    )
    return training_jobs.register_training_job(session, org_id, spec)


def test_keys_are_stored_hashed_and_authenticate(session: Session) -> None:
    orgs.create_organization(session, "acme")
    issued = orgs.create_api_key(session, "acme")
    assert orgs.authenticate(session, issued.key) == issued.organization_id
    from enginehouse.db.models import ApiKeyModel
    stored = session.query(ApiKeyModel).one()
    assert issued.key not in (stored.key_hash, stored.prefix)
    orgs.revoke_api_key(session, issued.key)
    with pytest.raises(AuthenticationError):
        orgs.authenticate(session, issued.key)
    with pytest.raises(AuthenticationError):
        orgs.authenticate(session, None)


def test_bootstrap_once(session: Session) -> None:
    first = orgs.bootstrap(session, "boot-key")
    assert first is not None and first.key == "boot-key"
    assert orgs.bootstrap(session, "boot-key") is None
    assert orgs.authenticate(session, "boot-key") == first.organization_id


def test_engine_names_share_the_deployment_namespace(session: Session, org_id: str, tmp_path: Path) -> None:
    engine = engines.create_engine(session, org_id, engine_spec("eng"))
    with pytest.raises(ConflictError):
        engines.create_engine(session, org_id, engine_spec("eng"))
    job = register_job(session, org_id, tmp_path)
    source = TrainingJobSource(type="training_job", training_id=job.id, checkpoint=1)
    with pytest.raises(ConflictError):
        deployments.deploy(session, org_id, engine.id, "eng", source)
    deployments.deploy(session, org_id, engine.id, "ft", source)
    with pytest.raises(ConflictError):
        engines.create_engine(session, org_id, engine_spec("ft"))


def test_deploy_onto_provisioning_engine_is_pending(session: Session, org_id: str, tmp_path: Path) -> None:
    engine = engines.create_engine(session, org_id, engine_spec())
    job = register_job(session, org_id, tmp_path)
    deployment = deployments.deploy(session, org_id, engine.id, "ft",
                                    TrainingJobSource(type="training_job", training_id=job.id, checkpoint=2))
    assert deployment.status == "Pending"
    assert deployment.checkpoint_path == str((tmp_path / "e2").resolve())


def test_deploy_refusals(session: Session, org_id: str, tmp_path: Path) -> None:
    engine = engines.create_engine(session, org_id, engine_spec())
    job = register_job(session, org_id, tmp_path)
    with pytest.raises(NotFoundError, match="no checkpoint 7"):
        deployments.deploy(session, org_id, engine.id, "ft",
                           TrainingJobSource(type="training_job", training_id=job.id, checkpoint=7))
    with pytest.raises(NotFoundError, match="training job"):
        deployments.deploy(session, org_id, engine.id, "ft",
                           TrainingJobSource(type="training_job", training_id="tr-nope", checkpoint=1))
    switch_engine_status(session, engine, EngineStatus.DELETING)
    with pytest.raises(ConflictError, match="Deleting"):
        deployments.deploy(session, org_id, engine.id, "ft",
                           TrainingJobSource(type="training_job", training_id=job.id, checkpoint=1))


def test_task_type_mismatch_is_a_conflict(session: Session, org_id: str, tmp_path: Path) -> None:
    engine = engines.create_engine(session, org_id, engine_spec())
    job = register_job(session, org_id, tmp_path)
    job.task_type = "classification"
    with pytest.raises(ConflictError, match="task type"):
        deployments.deploy(session, org_id, engine.id, "ft",
                           TrainingJobSource(type="training_job", training_id=job.id, checkpoint=1))


def test_registration_names_the_bad_checkpoint(session: Session, org_id: str, tmp_path: Path) -> None:
    def register(checkpoints: list[tuple[int, Path]]) -> None:
        training_jobs.register_training_job(session, org_id, training_jobs.TrainingJobSpec(
            name="j", task_type="text-generation", base_model="b",
            checkpoints=[training_jobs.CheckpointSpec(checkpoint=e, path=str(p)) for e, p in checkpoints]))

    good = fake_lora_checkpoint(tmp_path / "good")
    with pytest.raises(ValidationFailedError, match="checkpoint 2: directory .* does not exist"):
        register([(1, good), (2, tmp_path / "missing")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValidationFailedError, match="checkpoint 3: .*no adapter_config.json"):
        register([(3, tmp_path / "empty")])
    with pytest.raises(ValidationFailedError, match="checkpoint 4: adapter type is IA3"):
        register([(4, fake_lora_checkpoint(tmp_path / "ia3", peft_type="IA3"))])
    with pytest.raises(ValidationFailedError, match="checkpoint 1 is listed twice"):
        register([(1, good), (1, good)])


def test_other_organizations_objects_are_not_found(session: Session, org_id: str) -> None:
    engine = engines.create_engine(session, org_id, engine_spec())
    orgs.create_organization(session, "other")
    other = orgs.create_api_key(session, "other").organization_id
    with pytest.raises(NotFoundError):
        engines.get_engine(session, other, engine.id)
    assert engines.list_engines(session, other, PageRequest()).items == []
    # names are per organization: the other one may reuse it
    engines.create_engine(session, other, engine_spec())


def test_deactivate_and_reactivate_need_the_right_status(session: Session, org_id: str) -> None:
    engine = engines.create_engine(session, org_id, engine_spec())
    with pytest.raises(ConflictError, match="Provisioning"):
        engines.deactivate_engine(session, org_id, engine.id)
    with pytest.raises(ConflictError, match="Provisioning"):
        engines.reactivate_engine(session, org_id, engine.id)


def test_base_deployment_cannot_be_removed(session: Session, org_id: str) -> None:
    engine = engines.create_engine(session, org_id, engine_spec())
    switch_engine_status(session, engine, EngineStatus.ACTIVE)
    base = deployments.create_base_deployment(session, engine)
    with pytest.raises(ConflictError, match="base deployment"):
        deployments.remove_deployment(session, org_id, base.id)


def test_unavailable_option_waits_in_provisioning(session: Session, org_id: str) -> None:
    engine = engines.create_engine(session, org_id, engine_spec(option="gpu-h100-80gb"))
    assert engine.status == "Provisioning"
    assert "gpu-h100-80gb" in (engine.status_reason or "")
    with pytest.raises(ValidationFailedError, match="unknown deployment_option"):
        engines.create_engine(session, org_id, engine_spec("e2", option="tpu-v9"))


def test_status_changes_are_recorded_as_events(session: Session, org_id: str) -> None:
    engine = engines.create_engine(session, org_id, engine_spec())
    switch_engine_status(session, engine, EngineStatus.ACTIVE)
    engines.deactivate_engine(session, org_id, engine.id)
    events = engines.engine_events(session, org_id, engine.id, PageRequest()).items
    assert [(e.from_status, e.to_status) for e in events] == [
        (None, "Provisioning"), ("Provisioning", "Active"), ("Active", "Deactivating")]


def test_single_model_engine_takes_one_fine_tune(session: Session, org_id: str, tmp_path: Path) -> None:
    engine = engines.create_engine(session, org_id, engine_spec())
    engine.task_type = "embedding"  # a single-model task type (the spec only matters for its name)
    checkpoints = []
    for epoch in (1, 2):
        model_dir = tmp_path / f"model-{epoch}"
        model_dir.mkdir()
        (model_dir / "config.json").write_text("{}")
        checkpoints.append(training_jobs.CheckpointSpec(checkpoint=epoch, path=str(model_dir)))
    job = training_jobs.register_training_job(session, org_id, training_jobs.TrainingJobSpec(
        name="emb", task_type="embedding", base_model="/models/base", checkpoints=checkpoints))
    deployments.deploy(session, org_id, engine.id, "emb-1",
                       TrainingJobSource(type="training_job", training_id=job.id, checkpoint=1))
    with pytest.raises(ConflictError, match="one model at a time") as refused:
        deployments.deploy(session, org_id, engine.id, "emb-2",
                           TrainingJobSource(type="training_job", training_id=job.id, checkpoint=2))
    assert refused.value.code == "engine_occupied"


def test_checkpoint_metadata_lists_labels(tmp_path: Path) -> None:
    from enginehouse.core.task_types import TaskType
    from enginehouse.services.checkpoints import checkpoint_metadata

    (tmp_path / "config.json").write_text('{"id2label": {"1": "spam", "0": "ham", "10": "other"}}')
    assert checkpoint_metadata(TaskType.CLASSIFICATION, tmp_path) == {"labels": ["ham", "spam", "other"]}
    assert checkpoint_metadata(TaskType.REGRESSION, tmp_path) == {"labels": ["score"]}
    assert checkpoint_metadata(TaskType.TEXT_GENERATION, tmp_path) == {}
    assert checkpoint_metadata(TaskType.CLASSIFICATION, tmp_path / "missing") == {}


def _schedule_closed_today_and_yesterday() -> dict[str, object]:
    """All-day windows on every weekday but today's and yesterday's (UTC): closed now, opening
    at midnight and then open for five days."""
    today = datetime.now(timezone.utc).weekday()
    days = [day for i, day in enumerate(WEEKDAYS) if i not in (today, (today - 1) % 7)]
    return {"management_type": "schedule",
            "management_config": {"timezone": "UTC", "start_time": "00:00", "end_time": "00:00", "days": days}}


def test_a_manual_reactivation_against_the_schedule_holds_and_shows_when_it_ends(
    session: Session, org_id: str
) -> None:
    spec = EngineSpec.model_validate({**engine_spec().model_dump(exclude_none=True),
                                      "resource_management_config": _schedule_closed_today_and_yesterday()})
    engine = engines.create_engine(session, org_id, spec)
    for status in (EngineStatus.ACTIVE, EngineStatus.DEACTIVATING, EngineStatus.INACTIVE):
        switch_engine_status(session, engine, status)
    engines.reactivate_engine(session, org_id, engine.id)
    midnight = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    expected_end = midnight + timedelta(days=6)  # tomorrow's window and the four after it, merged
    assert engine.schedule_hold_until is not None
    assert engine.schedule_hold_until.replace(tzinfo=timezone.utc) == expected_end
    view = engine_to_dict(engines.read_engine(session, org_id, engine.id), {})
    assert view["next_transition"] == "deactivate"
    assert view["next_transition_at"] == expected_end.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    # A change the schedule makes itself ends the hold.
    switch_engine_status(session, engine, EngineStatus.ACTIVE)
    engines.deactivate_engine(session, org_id, engine.id, "outside its schedule window", manual=False)
    assert engine.schedule_hold_until is None


def test_an_engine_without_resource_management_shows_no_transition(session: Session, org_id: str) -> None:
    engine = engines.create_engine(session, org_id, engine_spec())
    view = engine_to_dict(engines.read_engine(session, org_id, engine.id), {})
    assert view["next_transition"] is None and view["next_transition_at"] is None
