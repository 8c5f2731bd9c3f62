"""Linear layers whose weights oneDNN lays out once, for float32 models served on a CPU.

``nn.Linear`` on a CPU calls a BLAS ``sgemm`` that re-lays out (packs) the whole weight matrix on
every call. At decode shapes (a few rows against a large weight) that packing costs as much as
the product itself, and on some x86 CPUs the BLAS picks slow kernels besides; a weight packed
once for oneDNN's matmul makes the same layer two to three times faster (measured on 16 rows of
hidden 1024: 0.44 ms against 1.18 ms for a 1024 × 2816 projection), prefills a little faster, in
float32 throughout. This is what vLLM's CPU backend does with its own oneDNN build.

``pack_linear_layers`` swaps each plain ``nn.Linear`` of a model for a ``PackedLinear`` holding
the packed weight; a weight no other module shares is then released (one read straight from a
float32 safetensors file stays mapped from it, as file pages the kernel may reclaim). Results
equal ``nn.Linear``'s up to float32 rounding (a different summation order).
Where this torch build has no oneDNN, or its answer on a probe differs from ``nn.Linear``'s, the
model is left as it is.
"""

from __future__ import annotations

import functools
import logging

import torch
from torch import nn

log = logging.getLogger(__name__)

# A typical decode batch: the hint oneDNN chooses its weight layout by (any row count works).
_ROWS_HINT = 16


class PackedLinear(nn.Linear):
    """An ``nn.Linear`` computed with a weight oneDNN packed once. Still an ``nn.Linear`` (LoRA
    wrappers and shape checks see one); ``weight`` is the original tensor where another module
    shares it (tied embeddings), else an empty one of the same dtype and device."""

    packed_weight: torch.Tensor

    @classmethod
    def from_linear(cls, linear: nn.Linear, shared: bool) -> PackedLinear:
        packed = cls.__new__(cls)
        nn.Module.__init__(packed)
        packed.in_features, packed.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach()
        packed.packed_weight = torch.ops.mkldnn._reorder_linear_weight(weight, _ROWS_HINT)
        kept = linear.weight if shared else nn.Parameter(weight.new_empty(0), requires_grad=False)
        packed.weight = kept
        packed.bias = linear.bias
        return packed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed_weight, self.bias, "none", [], "")


def pack_linear_layers(model: nn.Module) -> int:
    """Swap every plain float32 CPU ``nn.Linear`` of ``model`` for a ``PackedLinear``; the number
    swapped, which is logged (0 for a model on a GPU, or where packing is not available here)."""
    layers = [(parent, name, child) for parent in list(model.modules())
              for name, child in list(parent.named_children()) if type(child) is nn.Linear and _packable(child)]
    if not layers or not packing_available():
        return 0
    owners = _weight_owners(model)
    for parent, name, child in layers:
        setattr(parent, name, PackedLinear.from_linear(child, shared=owners.get(id(child.weight), 0) > 1))
    log.info("%d linear layers of %s packed for oneDNN", len(layers), type(model).__name__)
    return len(layers)


@functools.cache
def packing_available() -> bool:
    """Whether this torch build packs linear weights for oneDNN and gets ``nn.Linear``'s answer
    with them (checked once per process on a small layer)."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        probe = nn.Linear(64, 48).requires_grad_(False)
        x = torch.randn(5, 3, 64)
        expected = probe(x)
        got = PackedLinear.from_linear(probe, shared=True)(x)
    except (RuntimeError, AttributeError) as exc:  # an op this build lacks, or one that refuses
        log.info("linear weights stay unpacked: %s", exc)
        return False
    return got.shape == expected.shape and torch.allclose(got, expected, rtol=1e-4, atol=1e-5)


def _packable(linear: nn.Linear) -> bool:
    weight = linear.weight
    return (weight.dtype == torch.float32 and weight.device.type == "cpu" and weight.dim() == 2
            and weight.numel() > 0 and (linear.bias is None or linear.bias.dtype == torch.float32))


def _weight_owners(model: nn.Module) -> dict[int, int]:
    """How many modules hold each parameter (by identity): a tied embedding and head share one."""
    owners: dict[int, int] = {}
    for module in model.modules():
        for parameter in module.parameters(recurse=False):
            owners[id(parameter)] = owners.get(id(parameter), 0) + 1
    return owners
