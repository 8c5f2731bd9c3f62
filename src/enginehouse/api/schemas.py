"""Wire envelopes of the management API that are not domain specs themselves."""

from __future__ import annotations

from pydantic import model_validator

from enginehouse.core.specs import (
    DeploymentSource,
    EngineSpec,
    Epoch,
    ExperimentSource,
    Name,
    ObjectId,
    StrictModel,
    TrainingJobSource,
)


class DeployRequest(StrictModel):
    """``POST /v1/engines/{id}/deploy``: a name and either training_id + checkpoint or
    experiment_id + version."""

    name: Name
    training_id: ObjectId | None = None
    checkpoint: Epoch | None = None
    experiment_id: ObjectId | None = None
    version: Epoch | None = None

    @model_validator(mode="after")
    def _one_source(self) -> "DeployRequest":
        from_job = self.training_id is not None or self.checkpoint is not None
        from_experiment = self.experiment_id is not None or self.version is not None
        if from_job == from_experiment:
            raise ValueError("give either training_id and checkpoint, or experiment_id and version")
        if from_job and (self.training_id is None or self.checkpoint is None):
            raise ValueError("training_id and checkpoint go together")
        if from_experiment and (self.experiment_id is None or self.version is None):
            raise ValueError("experiment_id and version go together")
        return self

    def source(self) -> DeploymentSource:
        if self.training_id is not None and self.checkpoint is not None:
            return TrainingJobSource(
                type="training_job", training_id=self.training_id, checkpoint=self.checkpoint
            )
        assert self.experiment_id is not None and self.version is not None
        return ExperimentSource(
            type="experiment", experiment_id=self.experiment_id, version=self.version
        )


class CreateDeploymentRequest(StrictModel):
    """``POST /v1/deployments``: onto an existing engine (engine_id) or a new one (engine)."""

    name: Name
    source: DeploymentSource
    engine_id: ObjectId | None = None
    engine: EngineSpec | None = None

    @model_validator(mode="after")
    def _one_engine(self) -> "CreateDeploymentRequest":
        if (self.engine_id is None) == (self.engine is None):
            raise ValueError("give either engine_id (an existing engine) or engine (a new one)")
        return self


class UndeployRequest(StrictModel):
    deployment_name: Name
