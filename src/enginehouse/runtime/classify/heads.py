"""Per-deployment classification heads over one shared backbone.

An ``AutoModelForSequenceClassification`` is a backbone (``model.base_model``) plus a few head
modules applied to what the backbone returns: BERT runs ``classifier`` on the pooled output,
Llama runs ``score`` on every position and then keeps the last real token. Deployments on one
engine share the backbone (each row with its own LoRA slot) but each brings its own head, possibly
with a different number of labels.

Each head module is replaced by a ``RoutedHead`` that sends each row through the head of that
row's slot (rows grouped by slot) and zero-pads the outputs to the widest head, so the model's own
forward, pooling included, runs unchanged; each row's logits are cut back to its own width
afterwards. Swapping modules rather than re-implementing each architecture's pooling is what keeps
the outputs equal to PEFT's, which swaps in its ``modules_to_save`` copy the same way.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from enginehouse.runtime.classify.pooling import RoutedMeanPooling, SentencePooling
from enginehouse.runtime.lora.layers import LoRARouting


class HeadError(ValueError):
    """An adapter's head that does not fit this base model; the message says what to do."""


@dataclass(frozen=True)
class HeadModule:
    """One module of the base model's head, as observed in a probe forward."""

    name: str
    # A CPU copy of the base model's module: the structure an adapter's copy is built from.
    template: nn.Module
    input_shape: tuple[int, ...]  # one row's input, without the batch dimension
    output_shape: tuple[int, ...]


class HeadLayout:
    """The base model's head modules in the order they run; the last one produces the logits."""

    def __init__(self, modules: list[HeadModule]) -> None:
        if not modules:
            raise ValueError("a head needs at least one module")
        self.modules = {m.name: m for m in modules}
        self.logits_module = modules[-1].name

    @property
    def names(self) -> list[str]:
        return list(self.modules)

    @property
    def output_width(self) -> int:
        return self.modules[self.logits_module].output_shape[-1]

    def owner(self, key: str) -> str | None:
        """The head module a parameter or module name belongs to, if any."""
        return next((n for n in self.modules if key == n or key.startswith(n + ".")), None)

    def build(self, name: str, tensors: dict[str, torch.Tensor]) -> nn.Module:
        """The adapter's copy of head module ``name`` from its saved ``tensors`` (keys relative
        to the module, e.g. ``weight``), checked to take this backbone's output. CPU, eval mode."""
        info = self.modules[name]
        expected = set(info.template.state_dict())
        if set(tensors) != expected:
            raise HeadError(
                f"the saved head module {name} holds {sorted(tensors)} but this base model's "
                f"{name} ({type(info.template).__name__}) has {sorted(expected)}: the head was "
                "trained on a different architecture"
            )
        module = copy.deepcopy(info.template)
        own = info.template.state_dict()
        for key, tensor in tensors.items():
            self._check_shape(name, key, tensor, own[key], may_resize=name == self.logits_module)
            _replace_tensor(module, key, tensor)
        return self._dry_run(info, module)

    def _check_shape(
        self, name: str, key: str, tensor: torch.Tensor, own: torch.Tensor, *, may_resize: bool
    ) -> None:
        # Only the number of outputs (dim 0 of the logits layer) may differ between deployments:
        # a different input width means another hidden size, i.e. another base model.
        same = tensor.shape == own.shape or (
            may_resize and tensor.ndim == own.ndim and tensor.shape[1:] == own.shape[1:]
        )
        if not same:
            raise HeadError(
                f"head weight {name}.{key} is {tuple(tensor.shape)} in the adapter but "
                f"{tuple(own.shape)} in this base model (hidden size {self._input_width(name)}): the "
                "head was trained on a base model of another size"
            )
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise HeadError(f"head weight {name}.{key} contains NaN or infinite values")

    def _input_width(self, name: str) -> int:
        shape = self.modules[name].input_shape
        return shape[-1] if shape else 0

    def logits_width(self, module: nn.Module) -> int:
        """How many outputs a (checked) copy of the logits module gives."""
        return int(self._probe(self.modules[self.logits_module], module).shape[-1])

    def _dry_run(self, info: HeadModule, module: nn.Module) -> nn.Module:
        module.eval().requires_grad_(False)
        try:
            out = self._probe(info, module)
        except Exception as exc:  # any shape error of a hand-made head
            raise HeadError(f"the saved head module {info.name} does not fit this base model: {exc}") from None
        resizable = info.name == self.logits_module
        fits = isinstance(out, torch.Tensor) and (
            tuple(out.shape[1:]) == info.output_shape
            or (resizable and tuple(out.shape[1:-1]) == info.output_shape[:-1])
        )
        if not fits:
            raise HeadError(f"the saved head module {info.name} does not fit this base model's head")
        return module

    @staticmethod
    def _probe(info: HeadModule, module: nn.Module) -> torch.Tensor:
        dtype = next((p.dtype for p in info.template.parameters()), torch.float32)
        with torch.inference_mode():
            return module(torch.zeros((1, *info.input_shape), dtype=dtype))


def _replace_tensor(module: nn.Module, key: str, tensor: torch.Tensor) -> None:
    owner_name, _, attr = key.rpartition(".")
    owner = module.get_submodule(owner_name) if owner_name else module
    if attr in owner._parameters:
        owner._parameters[attr] = nn.Parameter(tensor.clone(), requires_grad=False)
    else:
        owner._buffers[attr] = tensor.clone()
    if isinstance(owner, nn.Linear) and attr == "weight":
        owner.out_features, owner.in_features = int(tensor.shape[0]), int(tensor.shape[1])


def discover_heads(model: nn.Module, probe_ids: torch.Tensor) -> HeadLayout:
    """The head modules of ``model``: its direct children other than the backbone that hold
    weights, in the order a probe forward over ``probe_ids`` runs them."""
    backbone = getattr(model, "base_model", None)
    candidates = {
        name: child
        for name, child in model.named_children()
        if child is not backbone and any(True for _ in child.parameters())
    }
    seen: list[tuple[str, nn.Module, tuple[int, ...], tuple[int, ...]]] = []

    def observer(name: str, child: nn.Module):  # type: ignore[no-untyped-def]
        def hook(_: nn.Module, args: tuple[object, ...], output: object) -> None:
            x = args[0] if args else None
            if isinstance(x, torch.Tensor) and isinstance(output, torch.Tensor):
                seen.append((name, child, tuple(x.shape[1:]), tuple(output.shape[1:])))

        return hook

    hooks = [child.register_forward_hook(observer(name, child)) for name, child in candidates.items()]
    try:
        with torch.inference_mode():
            model(input_ids=probe_ids, attention_mask=torch.ones_like(probe_ids))
    finally:
        for hook in hooks:
            hook.remove()
    if not seen:
        raise ValueError(f"{type(model).__name__} has no head module that takes the backbone's output")
    # Copied only now that the probe's hooks are gone: a copy taken inside the hook would carry
    # the hook along, and every adapter head made from it would copy itself again on each call.
    return HeadLayout([
        HeadModule(name, copy.deepcopy(child).to("cpu").eval().requires_grad_(False), in_shape, out_shape)
        for name, child, in_shape, out_shape in seen
    ])


class RoutedHead(nn.Module):
    """Runs each row through its slot's copy of one head module; slot 0 (and a slot whose
    adapter did not save this module) uses the base model's own."""

    def __init__(self, base: nn.Module, routing: LoRARouting, num_slots: int) -> None:
        super().__init__()
        self.base = base
        self.routing = routing
        # A plain list, not a ModuleList: these are state we swap, not submodules of the model
        # (they must not appear among LoRA targets or in the state dict).
        self.slots: list[nn.Module | None] = [None] * num_slots

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        slot_ids = self.routing.slot_ids
        if slot_ids is None:  # every row is the base model's
            return self.base(x)
        rows = int(slot_ids.shape[0])
        if x.shape[0] != rows:
            raise RuntimeError(f"head got input {tuple(x.shape)} for a batch of {rows} rows")
        groups = self._group_rows(slot_ids)
        if len(groups) == 1:
            return groups[0][0](x)
        outputs = [(index, module(x.index_select(0, index))) for module, index in groups]
        width = max(out.shape[-1] for _, out in outputs)
        first = outputs[0][1]
        result = first.new_zeros((rows, *first.shape[1:-1], width))
        for index, out in outputs:
            result[index, ..., : out.shape[-1]] = out
        return result

    def _group_rows(self, slot_ids: torch.Tensor) -> list[tuple[nn.Module, torch.Tensor]]:
        """The batch's rows by the module that serves them (slots without a copy of their own
        share the base model's, so they run together)."""
        by_module: dict[int, tuple[nn.Module, list[torch.Tensor]]] = {}
        for slot in torch.unique(slot_ids).tolist():
            own = self.slots[slot]
            module = self.base if own is None else own
            by_module.setdefault(id(module), (module, []))[1].append((slot_ids == slot).nonzero().flatten())
        return [(module, torch.cat(parts)) for module, parts in by_module.values()]


class HeadBank:
    """The routed heads installed in a model, and what each slot's head reads (``pooling``: None
    where the base model cannot pool by mean); only the batcher thread writes slots."""

    def __init__(self, model: nn.Module, layout: HeadLayout, routing: LoRARouting, num_slots: int, *,
                 pooling: RoutedMeanPooling | None = None) -> None:
        self.layout = layout
        self.pooling = pooling
        self.routed: dict[str, RoutedHead] = {}
        for name in layout.names:
            routed = RoutedHead(getattr(model, name), routing, num_slots)
            setattr(model, name, routed)
            self.routed[name] = routed
        self.device = next(model.parameters()).device

    def write_slot(self, slot: int, modules: dict[str, nn.Module], pooling: SentencePooling | None = None) -> None:
        """Put an adapter's head modules into ``slot``; modules it did not save use the base's.
        ``pooling``: the adapter's head reads the mean-pooled sentence embedding. An adapter that
        needs it where the base model cannot pool by mean never gets here: the adapter reader (built
        with the same base model's ``pooling_problem``) refuses it at load."""
        for name, routed in self.routed.items():
            module = modules.get(name)
            # A copy: the adapter's host-memory copy must stay on the host.
            routed.slots[slot] = copy.deepcopy(module).to(self.device) if module is not None else None
        if self.pooling is not None:
            self.pooling.write_slot(slot, pooling)
