"""The hook machinery shared by the per-example recorders.

A recorder finds every supported layer that owns a tracked parameter, keeps each layer's
input (forward hook) and, when the output gradient δ arrives (tensor hook), rescales it by
1/w_n so it is the gradient of l_n alone and hands (a, δ) of the recorded rows to the
subclass's `_accumulate`. Layers found for (model, parameters) are cached, so building a
recorder every training step costs little.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from covnoise.core.pergrad.layers import SUPPORTED_LAYERS


@dataclass
class Layer:
    """A supported layer and the indices of its weight and bias among the tracked params."""

    module: nn.Module
    weight: int | None  # index into params, or None when the weight is not tracked
    bias: int | None


# Layers found for (model, tracked parameters), so a recorder per step costs little.
_LAYER_CACHE: weakref.WeakKeyDictionary[nn.Module, tuple[tuple[int, ...], list[Layer]]] = (
    weakref.WeakKeyDictionary()
)


def _scan_layers(model: nn.Module, params: list[Tensor]) -> list[Layer]:
    """The supported layers owning `params`; errors name what cannot be recorded."""
    index = {id(p): i for i, p in enumerate(params)}
    owner: dict[int, str] = {}
    layers: list[Layer] = []
    for name, m in model.named_modules():
        own = [(n, p) for n, p in m.named_parameters(recurse=False) if id(p) in index]
        if not own:
            continue
        if not isinstance(m, SUPPORTED_LAYERS):
            raise TypeError(
                f"per-example statistics support only Linear, Conv1d and Conv2d "
                f"parameters; {name or 'model'} is {type(m).__name__}"
            )
        if getattr(m, "groups", 1) != 1:
            raise ValueError(f"per-example statistics need groups=1; {name} has {m.groups}")
        for n, p in own:
            if id(p) in owner:
                raise ValueError(f"parameter {name}.{n} is shared with {owner[id(p)]}")
            owner[id(p)] = f"{name}.{n}"
        w = index.get(id(m.weight))
        b = index.get(id(m.bias)) if m.bias is not None else None
        layers.append(Layer(m, w, b))
    missing = [i for i, p in enumerate(params) if id(p) not in owner]
    if missing:
        raise ValueError(
            f"parameters {missing} are not owned by a Linear/Conv1d/Conv2d layer of the model"
        )
    return layers


def find_layers(model: nn.Module, params: list[Tensor]) -> list[Layer]:
    """`_scan_layers`, cached per model for the same tracked parameters."""
    key = tuple(id(p) for p in params)
    cached = _LAYER_CACHE.get(model)
    if cached is not None and cached[0] == key:
        return cached[1]
    layers = _scan_layers(model, params)
    _LAYER_CACHE[model] = (key, layers)
    return layers


def _nonzero_uniform(w: Tensor) -> tuple[bool, float | None]:
    """(all of w non-zero, w's one value when all are equal else None), one read-back."""
    if w.numel() == 0:
        return True, None
    w = w.double()
    nonzero, equal, first = torch.stack([w.all(), (w == w[0]).all(), w[0]]).tolist()
    return bool(nonzero), first if equal else None


# Uniform loss weights handed out by `uniform_weights`: (n, dtype, device asked for) → the
# tensor; id → (the tensor, its version when made, its one value). A recorder given that
# tensor, unmodified, knows its value without a read-back.
_UNIFORM: dict[tuple[int, torch.dtype, str], Tensor] = {}
_KNOWN: dict[int, tuple[Tensor, int, float]] = {}


def uniform_weights(
    n: int, dtype: torch.dtype | None = None, device: torch.device | str | None = None
) -> Tensor:
    """torch.full((n,), 1/n), one shared tensor per (n, dtype, device): treat it as read-only.

    A recorder given it skips the read-back that checks that the weights are uniform and
    non-zero. Modified in place, it is recognised by its version, checked like any other
    weights and replaced by a fresh one at the next call."""
    key = (n, dtype or torch.get_default_dtype(), str(device or "cpu"))
    t = _UNIFORM.get(key)
    known = _KNOWN.get(id(t)) if t is not None else None
    if known is not None and known[0] is t and known[1] == t._version:
        return t
    if t is not None:
        _KNOWN.pop(id(t), None)
    if len(_UNIFORM) >= 64:
        _UNIFORM.clear()
        _KNOWN.clear()
    t = torch.full((n,), 1.0 / n, dtype=key[1], device=device)
    if n:
        _UNIFORM[key] = t
        _KNOWN[id(t)] = (t, t._version, float(t[0]))
    return t


def is_uniform(w: Tensor) -> bool:
    """Whether `w` is an unmodified `uniform_weights` tensor (1/n everywhere)."""
    return _known_uniform(w) is not None


def _known_uniform(w: Tensor) -> float | None:
    """The value of `w` when it is an unmodified `uniform_weights` tensor, else None."""
    known = _KNOWN.get(id(w))
    if known is None or known[0] is not w or w._version != known[1]:
        return None
    return known[2]


class LayerRecorder:
    """Hooks on every supported layer that owns a tracked parameter; subclasses add the
    statistic computed from (layer input, per-example output gradient) of the recorded rows.

    Run the forward and the backward inside the `with` block: leaving it removes the hooks.
    A subclass with `_defer_scale` set receives, when every recorded row has the same weight
    w, the unscaled δ and 1/w as a fourth argument of `_accumulate`, so it can scale its
    (smaller) results instead of δ.
    """

    _defer_scale = False

    def __init__(
        self,
        model: nn.Module,
        rows: Tensor | None,
        weights: Tensor | float,
        params: Sequence[Tensor] | None = None,
    ):
        self.model = model
        self.params = (
            list(params)
            if params is not None
            else [p for p in model.parameters() if p.requires_grad]
        )
        if rows is not None and not (isinstance(rows, Tensor) and rows.dtype == torch.long):
            rows = torch.as_tensor(rows, dtype=torch.long)
        self.rows = None if rows is None else rows.reshape(-1)
        self._set_weights(weights)
        self._layers = find_layers(self.model, self.params)
        self._inputs: dict[int, Tensor] = {}
        self._outputs: list[tuple[Tensor, int]] = []  # recorded layer outputs, their versions
        self._handles: list[RemovableHandle] = []
        self.batch_size: int | None = None
        self.count: int | None = None

    def _set_weights(self, weights: Tensor | float) -> None:
        """Keep 1/w_n of the recorded rows (w_n must be non-zero there)."""
        known = _known_uniform(weights) if isinstance(weights, Tensor) else None
        if known is not None:  # one value, non-zero, known without a read-back
            self._weights = None
            self._inv_w = self._uniform_inv_w = 1.0 / known
            self._n_weights = weights.numel()
        elif isinstance(weights, Tensor):
            self._weights: Tensor | None = weights.detach().reshape(-1)
            w = self._weights
            if self.rows is not None:
                w = w.index_select(0, self.rows.to(w.device))
            nonzero, uniform = _nonzero_uniform(w)
            if not nonzero:
                raise ValueError("per-example loss weights must be non-zero on the recorded rows")
            self._inv_w: Tensor | float = w.reciprocal()
            self._n_weights: int | None = weights.numel()
            # 1/w when every recorded row has the same weight w, else None
            self._uniform_inv_w: float | None = 1.0 / uniform if uniform is not None else None
        else:
            if float(weights) == 0.0:
                raise ValueError("per-example loss weight must be non-zero")
            self._inv_w = 1.0 / float(weights)
            self._uniform_inv_w = self._inv_w
            self._n_weights = None
            self._weights = None

    # -- context manager
    def __enter__(self) -> Any:
        for layer in self._layers:
            self._handles.append(layer.module.register_forward_hook(self._forward_hook(layer)))
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._inputs.clear()
        self._outputs.clear()

    # -- hooks
    def _forward_hook(self, layer: Layer) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            if not (
                torch.is_grad_enabled() and isinstance(output, Tensor) and output.requires_grad
            ):
                return
            key = id(module)
            if key in self._inputs:
                raise RuntimeError(
                    f"{type(module).__name__} ran twice before backward; per-example "
                    "statistics need one forward and one backward per layer"
                )
            a = inputs[0].detach()
            B = a.shape[0]
            if self.batch_size is None:
                self._check_batch(B)
            elif B != self.batch_size:
                raise RuntimeError(f"layer saw batch size {B}, expected {self.batch_size}")
            if self.rows is not None:
                a = a.index_select(0, self.rows.to(a.device))
            self._inputs[key] = a
            self._outputs.append((output, output._version))
            self._handles.append(output.register_hook(self._backward_hook(layer)))

        return hook

    def _check_batch(self, B: int) -> None:
        if self._n_weights is not None and self._n_weights != B:
            raise ValueError(f"{self._n_weights} loss weights for a batch of {B}")
        if self.rows is not None and self.rows.numel() and int(self.rows.max()) >= B:
            raise ValueError(f"rows index beyond the batch of {B}")
        self.batch_size = B
        self.count = B if self.rows is None else self.rows.numel()
        if self.rows is not None and self.count == B:  # distinct rows covering the batch
            self.rows = None
            if self._weights is not None:
                self._inv_w = self._weights.reciprocal()
                uniform = _nonzero_uniform(self._weights)[1]
                self._uniform_inv_w = 1.0 / uniform if uniform is not None else None

    def _backward_hook(self, layer: Layer) -> Callable[[Tensor], None]:
        def hook(grad_output: Tensor) -> None:
            a = self._inputs.pop(id(layer.module), None)
            if a is None:
                raise RuntimeError("backward ran twice through a recorded layer")
            d = grad_output.detach()
            if self.rows is not None:
                d = d.index_select(0, self.rows.to(d.device))
            inv_w = self._inv_w
            if self._defer_scale and self._uniform_inv_w is not None:
                with torch.no_grad():  # the subclass scales its results by 1/w instead
                    self._accumulate(layer, a, d, self._uniform_inv_w)
                return
            if isinstance(inv_w, Tensor):
                inv_w = inv_w.to(device=d.device, dtype=d.dtype)
                d = d * inv_w.view(-1, *([1] * (d.dim() - 1)))
            else:
                d = d * inv_w
            with torch.no_grad():
                self._accumulate(layer, a, d)

        return hook

    def backward(self, loss: Tensor) -> None:
        """Backpropagate `loss` as far as the recorded layers' outputs, keeping the graph.

        Every recorded layer sees its output gradient, but no parameter gradient is formed
        (the weight-gradient products of a backward are skipped) and the graph is kept for a
        later backward: the statistics of a loss other than the one trained on, from the
        same forward pass. Falls back to the parameters when an output was modified in place.
        """
        outputs = [o for o, _ in self._outputs]
        if any(o._version != v for o, v in self._outputs) or not outputs:
            outputs = self.params
        torch.autograd.grad(loss, outputs, retain_graph=True, allow_unused=True)

    def _accumulate(self, layer: Layer, a: Tensor, d: Tensor) -> None:
        raise NotImplementedError

    def _check_recorded(self) -> None:
        if self.count is None:
            raise RuntimeError("no forward pass was recorded")
