"""The option an engine is placed on, as recorded in its ``selected_option`` column:
``{"name", "reason"}``, and for ``auto`` the ``estimate`` it was sized by (SPEC §4.5)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from enginehouse.core import model_files, placement, sizing
from enginehouse.core.options import OptionOffer
from enginehouse.core.specs import EngineSpec
from enginehouse.errors import ValidationFailedError


def estimates_for(spec: EngineSpec, facts: sizing.ModelFacts, kinds: set[str]) -> dict[str, sizing.MemoryEstimate]:
    """One estimate per device kind: the serving dtype, and so the size, depends on it."""
    return {
        kind: sizing.estimate_memory(
            facts, sizing.serving_limits(spec.runtime_options, spec.task_type, kind, facts.shape)
        )
        for kind in kinds
    }


def select_option(spec: EngineSpec, offers: Sequence[OptionOffer]) -> dict[str, Any]:
    """Raises ``ValidationFailedError`` (422) when ``auto`` finds no option that holds the model."""
    if spec.deployment_option != "auto":
        return {"name": spec.deployment_option, "reason": "chosen in the engine's deployment_option"}
    facts = model_files.read_model_facts(spec.base_model)
    estimates = estimates_for(spec, facts, {offer.option.kind for offer in offers})
    chosen = placement.place(estimates, offers)
    if chosen is None:
        raise ValidationFailedError(
            placement.no_fit_message(spec.base_model, estimates, offers),
            code="model_too_large", param="base_model",
        )
    reason = "; ".join([chosen.reason, *facts.notes])
    estimate = {**chosen.estimate.to_dict(), "headroom": placement.HEADROOM}
    return {"name": chosen.offer.name, "reason": reason, "estimate": estimate}
