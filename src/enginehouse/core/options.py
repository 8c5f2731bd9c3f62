"""Deployment options (SPEC §4.5): the hardware shapes an engine may run on.

The catalog names the cloud GPU shapes a cluster provider could start; providers say which shapes
they can give now (``ReplicaProvider.deployment_options``), and ``listing`` marks each shape
available or not by that. GB here are 10^9 bytes, as cards and instances are sold.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass

GB = 10**9


@dataclass(frozen=True)
class DeploymentOption:
    name: str
    kind: str  # "cpu" or "gpu"
    accelerator: str | None
    accelerator_memory_gb: float | None  # per accelerator
    cpus: int
    memory_gb: float  # host memory
    hourly_cost_usd: tuple[float, float]
    accelerator_count: int = 0

    @property
    def model_memory_bytes(self) -> int:
        """Memory a replica's model lives in: all its accelerators together, else host memory."""
        if self.kind == "gpu" and self.accelerator_memory_gb:
            return int(self.accelerator_memory_gb * max(1, self.accelerator_count) * GB)
        return int(self.memory_gb * GB)

    def to_dict(self, available: bool) -> dict[str, object]:
        data = asdict(self)
        data["hourly_cost_usd"] = {"min": self.hourly_cost_usd[0], "max": self.hourly_cost_usd[1]}
        data["model_memory_gb"] = round(self.model_memory_bytes / GB, 1)
        data["available"] = available
        return data


@dataclass(frozen=True)
class OptionOffer:
    """A shape as an engine sees it: ``available`` when some provider can start a replica on it."""

    option: DeploymentOption
    available: bool

    @property
    def name(self) -> str:
        return self.option.name


def _gpu(name: str, accelerator: str, memory_gb: float, cpus: int, host_gb: float,
         cost: tuple[float, float], count: int = 1) -> DeploymentOption:
    return DeploymentOption(name, "gpu", accelerator, memory_gb, cpus, host_gb, cost, count)


# Typical cloud instances for each card (vCPUs, host memory, on-demand price range across clouds).
CLOUD_GPU_SHAPES: tuple[DeploymentOption, ...] = (
    _gpu("gpu-l4-24gb", "NVIDIA L4", 24, 8, 32, (0.7, 1.2)),
    _gpu("gpu-a10g-24gb", "NVIDIA A10G", 24, 8, 32, (1.0, 1.6)),
    _gpu("gpu-l40s-48gb", "NVIDIA L40S", 48, 8, 64, (1.0, 2.2)),
    _gpu("gpu-a100-40gb", "NVIDIA A100", 40, 12, 85, (1.2, 3.7)),
    _gpu("gpu-a100-80gb", "NVIDIA A100", 80, 12, 120, (2.5, 4.0)),
    _gpu("gpu-h100-80gb", "NVIDIA H100", 80, 16, 200, (3.5, 6.5)),
    _gpu("gpu-h100-80gb-x2", "NVIDIA H100", 80, 52, 400, (7.0, 13.0), count=2),
    _gpu("gpu-h100-80gb-x4", "NVIDIA H100", 80, 104, 800, (14.0, 26.0), count=4),
    _gpu("gpu-h100-80gb-x8", "NVIDIA H100", 80, 192, 1600, (28.0, 52.0), count=8),
)


def host_memory_bytes() -> int:
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 0


def replica_capacity(option: DeploymentOption, replica_bytes: int | None) -> int:
    """How many replicas of a model needing ``replica_bytes`` (None: unknown) one provider's
    ``option`` can run at once: on CPU, one per core and as many as host memory holds; on a GPU
    shape, as many as its memory holds. At least one: a model that fits no copy was refused
    when its engine was sized."""
    fits = option.model_memory_bytes // replica_bytes if replica_bytes else None
    if option.kind == "cpu":
        return max(1, min(option.cpus, fits) if fits is not None else option.cpus)
    return max(1, fits) if fits is not None else 1


def host_cpu() -> DeploymentOption:
    """This machine's CPUs, the model held in host memory."""
    return DeploymentOption("cpu", "cpu", None, None, os.cpu_count() or 1,
                            round(host_memory_bytes() / GB, 1), (0.0, 0.0))


def local_gpu(index: int, device_name: str, memory_bytes: int) -> DeploymentOption:
    """One GPU of this machine, named like the cloud shapes: ``local-gpu0-h200-141gb``."""
    model = re.sub(r"[^a-z0-9]+", "-", device_name.lower().replace("nvidia", "")).strip("-") or "gpu"
    memory_gb = round(memory_bytes / GB, 1)
    name = f"local-gpu{index}-{model}-{memory_gb:.0f}gb"
    return DeploymentOption(name, "gpu", device_name, memory_gb, os.cpu_count() or 1,
                            round(host_memory_bytes() / GB, 1), (0.0, 0.0), accelerator_count=1)


def listing(offered: Iterable[DeploymentOption]) -> list[OptionOffer]:
    """Every shape an engine may name: what providers offer (available), then the cloud shapes
    none of them offers (listed, so an engine can ask for one and wait for a provider)."""
    available = list({option.name: option for option in offered}.values())
    names = {option.name for option in available}
    unavailable = [shape for shape in CLOUD_GPU_SHAPES if shape.name not in names]
    return [OptionOffer(o, True) for o in available] + [OptionOffer(o, False) for o in unavailable]


def default_listing() -> list[OptionOffer]:
    """The listing when no provider is asked: this machine's CPU is the only available shape."""
    return listing([host_cpu()])


def catalog() -> list[DeploymentOption]:
    """This machine's CPU shape, then the GPU shapes a cluster provider can offer."""
    return [offer.option for offer in default_listing()]


def option_names(offers: Iterable[OptionOffer] | None = None) -> set[str]:
    return {offer.name for offer in (default_listing() if offers is None else offers)}


def waiting_reason(name: str) -> str:
    """An engine's status_reason while no provider can give the option it was placed on."""
    return f"waiting for deployment option {name!r}: no provider of this installation can give it now"
