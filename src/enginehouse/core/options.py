"""Deployment options (SPEC §4.5): the hardware shapes an engine may run on, and "auto" sizing."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class DeploymentOption:
    name: str
    kind: str  # "cpu" or "gpu"
    accelerator: str | None
    accelerator_memory_gb: float | None
    cpus: int
    memory_gb: float
    hourly_cost_usd: tuple[float, float]

    def to_dict(self, available: bool) -> dict[str, object]:
        data = asdict(self)
        data["hourly_cost_usd"] = {"min": self.hourly_cost_usd[0], "max": self.hourly_cost_usd[1]}
        data["available"] = available
        return data


def _host_memory_gb() -> float:
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        return round(pages / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return 0.0


def catalog() -> list[DeploymentOption]:
    """This machine's CPU shape, then the GPU shapes a cluster provider can offer."""
    return [
        DeploymentOption("cpu", "cpu", None, None, os.cpu_count() or 1, _host_memory_gb(), (0.0, 0.0)),
        DeploymentOption("gpu-l4-24gb", "gpu", "NVIDIA L4", 24, 8, 32, (0.7, 1.2)),
        DeploymentOption("gpu-a10g-24gb", "gpu", "NVIDIA A10G", 24, 8, 32, (1.0, 1.6)),
        DeploymentOption("gpu-a100-80gb", "gpu", "NVIDIA A100", 80, 12, 120, (2.5, 4.0)),
        DeploymentOption("gpu-h100-80gb", "gpu", "NVIDIA H100", 80, 16, 200, (3.5, 6.5)),
    ]


def available_option_names() -> set[str]:
    """What this installation can start replicas on today: the local CPU."""
    return {"cpu"}


def option_names() -> set[str]:
    return {option.name for option in catalog()}


def resolve_auto(base_model: str) -> tuple[str, str]:
    """Pick the option for ``deployment_option: auto``; returns (name, why)."""
    return "cpu", "only the local CPU is available on this installation; it holds the model in host memory"
