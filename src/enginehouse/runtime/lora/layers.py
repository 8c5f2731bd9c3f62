"""Batched multi-adapter LoRA: one forward pass serves rows that use different adapters.

Each targeted linear layer of the base model is wrapped in a ``BatchedLoRALinear`` that holds
the weights of every resident adapter stacked by *slot*: ``A[slot]`` is ``[r_max, in]`` (PEFT's
own layout) and ``B[slot]`` is ``[r_max, out]``, so the first ``r`` rows of a slot are one
contiguous block and gathering a batch's matrices is a plain ``index_select``. Slot 0 means "no adapter" and stays all zeros. For a batch whose
row ``i`` uses slot ``s_i`` the layer computes

    y_i = base(x_i) + scaling[s_i] * (x_i @ A[s_i]) @ B[s_i]

with two ``torch.bmm`` over the gathered per-row matrices: the gathered (Punica / S-LoRA) form,
whose cost does not grow with the number of distinct adapters in the batch. Ranks below
``r_max`` are zero-padded, which changes nothing in the result.

The gather itself costs more than the two products at decode shapes, and a running batch keeps
the same rows for many steps; so each layer keeps its gathered matrices until the rows' slots or
the layer's own slot contents change.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

try:  # GPT-2 style models use a transposed "Conv1D" linear layer.
    from transformers.pytorch_utils import Conv1D
except ImportError:  # pragma: no cover - transformers always ships it today
    Conv1D = None  # type: ignore[assignment,misc]

TargetKind = Literal["linear", "embedding", "other"]


@dataclass(frozen=True)
class TargetInfo:
    """What the base model has under a module name, as far as LoRA is concerned."""

    kind: TargetKind
    in_features: int = 0
    out_features: int = 0


@dataclass(frozen=True)
class ModuleLoRA:
    """One adapted module of one adapter, in PEFT's layout: A ``[r, in]``, B ``[out, r]``."""

    lora_a: torch.Tensor
    lora_b: torch.Tensor
    scaling: float

    @property
    def rank(self) -> int:
        return int(self.lora_a.shape[0])


@dataclass
class LoRARouting:
    """Which slot each batch row uses in the next forward; set by the engine before each one.

    Shared by every wrapped layer. ``slot_ids`` is None, or ``active`` is empty, when the batch
    is base-model only, which lets every layer skip its LoRA term entirely. ``version`` changes
    whenever the rows' slots differ from the previous forward's, telling layers to gather again.
    """

    slot_ids: torch.Tensor | None = None
    active: frozenset[int] = field(default_factory=frozenset)
    version: int = 0
    # Seconds the layers' LoRA terms took, summed over every forward (read by the engine's timers;
    # a base-only batch adds nothing, since its layers skip the term before the clock starts).
    seconds: float = 0.0
    # The last rows set, and what was derived from them: reused while the rows stay the same.
    _last: tuple[list[int], torch.Tensor | None, frozenset[int]] = ([], None, frozenset())

    def set_rows(self, slots: list[int], device: torch.device) -> None:
        if slots != self._last[0]:
            self.version += 1
            active = frozenset(s for s in slots if s != 0)
            ids = torch.tensor(slots, dtype=torch.long, device=device) if active else None
            self._last = (list(slots), ids, active)
        _, self.slot_ids, self.active = self._last

    def clear(self) -> None:
        self.slot_ids = None
        self.active = frozenset()


class BatchedLoRALinear(nn.Module):
    def __init__(
        self,
        base: nn.Module,
        info: TargetInfo,
        num_slots: int,
        max_rank: int,
        routing: LoRARouting,
    ) -> None:
        super().__init__()
        self.base = base
        self.routing = routing
        weight = _weight_of(base)
        shape_a = (num_slots, max_rank, info.in_features)
        shape_b = (num_slots, max_rank, info.out_features)
        opts = {"dtype": weight.dtype, "device": weight.device}
        # Buffers, not parameters: they are state we write, never something to train.
        self.register_buffer("lora_a", torch.zeros(shape_a, **opts), persistent=False)
        self.register_buffer("lora_b", torch.zeros(shape_b, **opts), persistent=False)
        self.register_buffer("scaling", torch.zeros(num_slots, **opts), persistent=False)
        self.ranks = [0] * num_slots  # rank of the adapter in each slot here; 0: none
        self._gathered: _Gathered | None = None

    def set_slot(self, slot: int, weights: ModuleLoRA) -> None:
        r = weights.rank
        self.clear_slot(slot)
        self._gathered = None
        self.lora_a[slot, :r, :] = weights.lora_a.to(self.lora_a)
        self.lora_b[slot, :r, :] = weights.lora_b.t().to(self.lora_b)
        self.scaling[slot] = weights.scaling
        self.ranks[slot] = r

    def clear_slot(self, slot: int) -> None:
        if self.ranks[slot]:
            self.lora_a[slot].zero_()
            self.lora_b[slot].zero_()
            self.scaling[slot] = 0.0
            self.ranks[slot] = 0
            self._gathered = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base(x)
        routing = self.routing
        if routing.slot_ids is None:
            return result
        started = time.perf_counter()
        result = self._add_lora(x, result, routing)
        routing.seconds += time.perf_counter() - started
        return result

    def _add_lora(self, x: torch.Tensor, result: torch.Tensor, routing: LoRARouting) -> torch.Tensor:
        gathered = self._gather(routing)
        if gathered.rank == 0:
            return result
        rows = gathered.scaling.shape[0]
        if x.dim() < 2 or x.shape[0] != rows:
            # Row i of the batch must be x[i]; a layer fed flattened or re-routed tokens (MoE
            # experts) cannot be told which adapter each token belongs to.
            raise RuntimeError(f"LoRA layer got input {tuple(x.shape)} for a batch of {rows} rows")
        flat = x.reshape(rows, -1, x.shape[-1]).to(gathered.lora_a.dtype)
        # The scaling goes on the rank-wide middle product (the smallest tensor here), and the
        # second product adds straight into the base output: three kernels where the textbook
        # form takes five, and no [rows, tokens, out] temporary. Against PEFT's order (scaling
        # after B) this differs only in rounding, and not at all for power-of-two scalings.
        hidden = torch.bmm(flat, gathered.lora_a.transpose(1, 2)).mul_(gathered.scaling)
        if result.dtype == hidden.dtype and result.is_contiguous():
            result.view(rows, -1, result.shape[-1]).baddbmm_(hidden, gathered.lora_b)
            return result
        return result + torch.bmm(hidden, gathered.lora_b).reshape(result.shape).to(result.dtype)

    def _gather(self, routing: LoRARouting) -> _Gathered:
        cached = self._gathered
        if cached is not None and cached.version == routing.version:
            return cached
        idx = routing.slot_ids
        assert idx is not None
        rank = max((self.ranks[s] for s in routing.active), default=0)
        # Only the columns up to the largest rank in use carry anything; the rest are zeros.
        self._gathered = _Gathered(
            version=routing.version,
            rank=rank,
            lora_a=self.lora_a[:, :rank, :].index_select(0, idx),
            lora_b=self.lora_b[:, :rank, :].index_select(0, idx),
            scaling=self.scaling.index_select(0, idx).view(-1, 1, 1),
        )
        return self._gathered


@dataclass(frozen=True)
class _Gathered:
    """One layer's per-row LoRA matrices for the rows of one routing ``version``."""

    version: int
    rank: int
    lora_a: torch.Tensor  # [rows, rank, in]
    lora_b: torch.Tensor  # [rows, rank, out]
    scaling: torch.Tensor  # [rows, 1, 1]


def _weight_of(module: nn.Module) -> torch.Tensor:
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"{type(module).__name__} has no weight tensor")
    return weight


def describe_target(module: nn.Module) -> TargetInfo:
    if isinstance(module, BatchedLoRALinear):
        module = module.base
    if isinstance(module, nn.Linear):
        return TargetInfo("linear", module.in_features, module.out_features)
    if Conv1D is not None and isinstance(module, Conv1D):
        in_features, out_features = module.weight.shape  # Conv1D stores the weight transposed
        return TargetInfo("linear", int(in_features), int(out_features))
    if isinstance(module, nn.Embedding):
        return TargetInfo("embedding", module.num_embeddings, module.embedding_dim)
    return TargetInfo("other")


class MultiLoRAModel:
    """The base model plus its LoRA slots. Only the engine thread may call ``write_slot``.

    Layers are wrapped lazily, the first time a resident adapter targets them, so a model serving
    only q/v adapters pays nothing in its MLP.
    """

    def __init__(self, model: nn.Module, num_slots: int, max_rank: int) -> None:
        self.model = model
        self.num_slots = num_slots
        self.max_rank = max_rank
        self.routing = LoRARouting()
        self.targets: dict[str, TargetInfo] = {
            name: describe_target(module) for name, module in model.named_modules() if name
        }
        self.wrapped: dict[str, BatchedLoRALinear] = {}

    def write_slot(self, slot: int, modules: dict[str, ModuleLoRA]) -> None:
        """Put one adapter into ``slot`` (1-based), clearing whatever was there before."""
        if not 0 < slot < self.num_slots:
            raise ValueError(f"slot {slot} out of range")
        for name in modules:
            if name not in self.wrapped:
                self._wrap(name)
        for name, layer in self.wrapped.items():
            if name in modules:
                layer.set_slot(slot, modules[name])
            else:
                layer.clear_slot(slot)

    def _wrap(self, name: str) -> None:
        info = self.targets.get(name)
        if info is None or info.kind != "linear":
            raise ValueError(f"module {name!r} cannot carry a LoRA adapter")
        parent_name, _, child_name = name.rpartition(".")
        parent = self.model.get_submodule(parent_name) if parent_name else self.model
        base = getattr(parent, child_name)
        layer = BatchedLoRALinear(base, info, self.num_slots, self.max_rank, self.routing)
        setattr(parent, child_name, layer)
        self.wrapped[name] = layer
