"""Per-example gradient statistics from layer hooks, without materialising B×P gradients.

The diagonal noise structure needs v = per-coordinate variance of the per-example gradients
g_n, and the full structure's noise statistics need the B×B Gram matrix of the g_n. Both are
computed layer by layer from what autograd already has: the layer input a_n (kept by a
forward hook) and the output gradient δ_n (seen by a tensor hook on the layer output).

The backpropagated loss is Σ_n w_n l_n with known weights w_n (1/B for a plain mean), so
δ_n / w_n is the output gradient of l_n alone. For a linear layer g_n = (δ_n/w_n) ⊗ a_n and
Σ_n g_n² = (δ²/w²)ᵀ(a²): one extra matrix product. Convolutions use the unfolded input and
form per-example weight gradients for one layer at a time. Statistics may be restricted to a
sub-batch `rows`, which makes the extra cost proportional to len(rows)/B.

Supported layers: nn.Linear (any number of leading dimensions per example), nn.Conv1d and
nn.Conv2d (stride, padding incl. "same" and non-zero padding modes, dilation; groups=1), with
or without bias. Layers that mix examples (BatchNorm in training mode) make the per-layer
"per-example gradient" differ from the gradient of l_n; models here avoid them.

`per_example_grads` (torch.func) is the dense reference used by tests and small probes.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

SUPPORTED_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)

# Layers found for (model, tracked parameters), so a recorder per step costs little.
_LAYER_CACHE: weakref.WeakKeyDictionary[nn.Module, tuple[tuple[int, ...], list[_Layer]]] = (
    weakref.WeakKeyDictionary()
)

# Largest number of elements of per-example weight gradients formed at once (conv layers).
_CHUNK_ELEMENTS = 1 << 24


# --------------------------------------------------------------------------- results
@dataclass
class DiagStats:
    """Σ_n g_n² and Σ_n g_n over the sub-batch rows, one tensor per parameter."""

    sumsq: list[Tensor]
    sum: list[Tensor]
    count: int
    batch_size: int | None = None

    def variance(self, batch_size: int | None = None) -> list[Tensor]:
        """Unbiased estimate of diag(C) of the whole batch (population variance over B rows).

        With b = count rows drawn without replacement from B, the sample variance with
        denominator b − 1 is unbiased for the finite-population variance with denominator
        B − 1, so it is scaled by (B − 1)/B. With b = B this is exactly the population
        variance. Clamped at zero (negative values can only come from rounding).
        """
        B = self.batch_size if batch_size is None else batch_size
        if B is None:
            raise ValueError("variance: batch_size is unknown; pass it explicitly")
        b = self.count
        if b > B:
            raise ValueError(f"variance: {b} rows cannot come from a batch of {B}")
        if b == B:
            scale = 1.0 / b
        elif b >= 2:
            scale = (B - 1) / (B * (b - 1))
        else:
            raise ValueError("variance: a sub-batch needs at least 2 rows")
        # (Σg² − (Σg)²/b) · scale, as a few fused list operations
        sq_mean = torch._foreach_mul(self.sum, self.sum)
        torch._foreach_mul_(sq_mean, 1.0 / b)
        out = torch._foreach_sub(self.sumsq, sq_mean)
        torch._foreach_mul_(out, scale)
        torch._foreach_clamp_min_(out, 0.0)
        return list(out)


# --------------------------------------------------------------------------- layer algebra
def _conv_input_padded(module: nn.Module, a: Tensor) -> tuple[Tensor, tuple[int, ...]]:
    """The conv input with explicit padding where unfold cannot pad, and the padding left."""
    nd = a.dim() - 2
    kernel, dilation = module.kernel_size, module.dilation
    if isinstance(module.padding, str):
        if module.padding == "valid":
            return a, (0,) * nd
        pads: list[int] = []  # "same": left = total // 2, the extra one on the right
        for d, k in zip(reversed(dilation), reversed(kernel), strict=True):
            total = d * (k - 1)
            pads += [total // 2, total - total // 2]
        mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
        return F.pad(a, pads, mode=mode), (0,) * nd
    if module.padding_mode != "zeros":
        pads = [p for p in reversed(module.padding) for _ in range(2)]
        return F.pad(a, pads, mode=module.padding_mode), (0,) * nd
    return a, tuple(module.padding)


def _unfold(module: nn.Module, a: Tensor) -> Tensor:
    """Unfolded conv input (b, C_in·k, L), rows ordered like weight.view(C_out, -1)."""
    a, padding = _conv_input_padded(module, a)
    if isinstance(module, nn.Conv1d):
        return F.unfold(
            a.unsqueeze(2),
            kernel_size=(1, module.kernel_size[0]),
            dilation=(1, module.dilation[0]),
            padding=(0, padding[0]),
            stride=(1, module.stride[0]),
        )
    return F.unfold(
        a,
        kernel_size=module.kernel_size,
        dilation=module.dilation,
        padding=padding,
        stride=module.stride,
    )


def _is_plain_linear(module: nn.Module, a: Tensor) -> bool:
    """A linear layer on (b, in) inputs: statistics without per-example gradients."""
    return isinstance(module, nn.Linear) and a.dim() == 2


def _per_example_weight(module: nn.Module, a: Tensor, d: Tensor) -> Tensor:
    """Per-example weight gradients (b, C_out, fan_in) from the layer input a and δ."""
    b = a.shape[0]
    if isinstance(module, nn.Linear):
        if a.dim() == 2:
            return d.unsqueeze(2) * a.unsqueeze(1)
        a = a.reshape(b, -1, a.shape[-1])
        return torch.bmm(d.reshape(b, -1, d.shape[-1]).transpose(1, 2), a)
    cols = _unfold(module, a)  # (b, C_in·k, L)
    return torch.bmm(d.reshape(b, d.shape[1], -1), cols.transpose(1, 2))


def _per_example_bias(module: nn.Module, d: Tensor) -> Tensor:
    """Per-example bias gradients (b, C_out)."""
    if isinstance(module, nn.Linear):
        return d if d.dim() == 2 else d.reshape(d.shape[0], -1, d.shape[-1]).sum(1)
    return d.reshape(d.shape[0], d.shape[1], -1).sum(2)


def _chunks(module: nn.Module, a: Tensor, d: Tensor) -> list[slice]:
    """Slices of examples whose per-example weight gradients (and unfolded inputs) stay
    within _CHUNK_ELEMENTS elements."""
    b = a.shape[0]
    per_example = module.weight.numel() + a[:1].numel() * math.prod(module.weight.shape[2:])
    step = max(1, _CHUNK_ELEMENTS // max(1, per_example))
    return [slice(i, min(b, i + step)) for i in range(0, b, step)]


# --------------------------------------------------------------------------- hook machinery
@dataclass
class _Layer:
    module: nn.Module
    weight: int | None  # index into params, or None when the weight is not tracked
    bias: int | None


class _LayerRecorder:
    """Hooks on every supported layer that owns a tracked parameter; subclasses add the
    statistic computed from (layer input, per-example output gradient) of the recorded rows.

    Run the forward and the backward inside the `with` block: leaving it removes the hooks.
    """

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
        if isinstance(weights, Tensor):
            self._weights: Tensor | None = weights.detach().reshape(-1)
            w = self._weights
            if self.rows is not None:
                w = w.index_select(0, self.rows.to(w.device))
            if not bool(w.all()):
                raise ValueError("per-example loss weights must be non-zero on the recorded rows")
            self._inv_w: Tensor | float = w.reciprocal()
            self._n_weights: int | None = weights.numel()
        else:
            if float(weights) == 0.0:
                raise ValueError("per-example loss weight must be non-zero")
            self._inv_w = 1.0 / float(weights)
            self._n_weights = None
            self._weights = None
        self._layers = self._find_layers()
        self._inputs: dict[int, Tensor] = {}
        self._handles: list[RemovableHandle] = []
        self.batch_size: int | None = None
        self.count: int | None = None

    def _find_layers(self) -> list[_Layer]:
        key = tuple(id(p) for p in self.params)
        cached = _LAYER_CACHE.get(self.model)
        if cached is not None and cached[0] == key:
            return cached[1]
        layers = self._scan_layers()
        _LAYER_CACHE[self.model] = (key, layers)
        return layers

    def _scan_layers(self) -> list[_Layer]:
        index = {id(p): i for i, p in enumerate(self.params)}
        owner: dict[int, str] = {}
        layers: list[_Layer] = []
        for name, m in self.model.named_modules():
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
            layers.append(_Layer(m, w, b))
        missing = [i for i, p in enumerate(self.params) if id(p) not in owner]
        if missing:
            raise ValueError(
                f"parameters {missing} are not owned by a Linear/Conv1d/Conv2d layer of the model"
            )
        return layers

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

    # -- hooks
    def _forward_hook(self, layer: _Layer) -> Callable[..., None]:
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

    def _backward_hook(self, layer: _Layer) -> Callable[[Tensor], None]:
        def hook(grad_output: Tensor) -> None:
            a = self._inputs.pop(id(layer.module), None)
            if a is None:
                raise RuntimeError("backward ran twice through a recorded layer")
            d = grad_output.detach()
            if self.rows is not None:
                d = d.index_select(0, self.rows.to(d.device))
            inv_w = self._inv_w
            if isinstance(inv_w, Tensor):
                inv_w = inv_w.to(device=d.device, dtype=d.dtype)
                d = d * inv_w.view(-1, *([1] * (d.dim() - 1)))
            else:
                d = d * inv_w
            with torch.no_grad():
                self._accumulate(layer, a, d)

        return hook

    def _accumulate(self, layer: _Layer, a: Tensor, d: Tensor) -> None:
        raise NotImplementedError


class DiagStatsRecorder(_LayerRecorder):
    """Context manager: records Σ_n g_n² and Σ_n g_n over `rows` during one backward.

    `weights` are the per-example loss weights of the backpropagated loss Σ_n w_n l_n (a
    tensor of shape (B,) or one float, normally 1/B). `rows` (distinct indices into the
    batch, None = all) is the sub-batch the statistics are computed on. Call `result()` after
    backward (inside or after the `with` block).
    """

    def __init__(
        self,
        model: nn.Module,
        rows: Tensor | None,
        weights: Tensor | float,
        params: list[Tensor] | None = None,
    ):
        super().__init__(model, rows, weights, params)
        self._sumsq: list[Tensor | None] = [None] * len(self.params)
        self._sum: list[Tensor | None] = [None] * len(self.params)

    def __enter__(self) -> DiagStatsRecorder:
        return super().__enter__()

    def _accumulate(self, layer: _Layer, a: Tensor, d: Tensor) -> None:
        m = layer.module
        if _is_plain_linear(m, a):  # (δ²)ᵀ(a²) and δᵀa; the bias from the same δ²
            d2 = d * d
            if layer.weight is not None:
                self._add(layer.weight, d2.t().mm(a * a), d.t().mm(a))
            if layer.bias is not None:
                self._add(layer.bias, d2.sum(0), d.sum(0))
            return
        if layer.weight is not None:
            wshape = m.weight.shape
            sq = torch.zeros(wshape[0], m.weight[0].numel(), dtype=d.dtype, device=d.device)
            s = torch.zeros_like(sq)
            for c in _chunks(m, a, d):
                g = _per_example_weight(m, a[c], d[c])
                sq += (g * g).sum(0)
                s += g.sum(0)
            self._add(layer.weight, sq.view(wshape), s.view(wshape))
        if layer.bias is not None:
            gb = _per_example_bias(m, d)
            self._add(layer.bias, (gb * gb).sum(0), gb.sum(0))

    def _add(self, i: int, sq: Tensor, s: Tensor) -> None:
        if self._sumsq[i] is None:
            self._sumsq[i], self._sum[i] = sq, s
        else:
            self._sumsq[i] = self._sumsq[i] + sq
            self._sum[i] = self._sum[i] + s

    def result(self) -> DiagStats:
        """Statistics per parameter, in the order of `params` (zeros for unused layers)."""
        if self.count is None:
            raise RuntimeError("no forward pass was recorded")
        sumsq = [
            torch.zeros_like(p) if t is None else t
            for p, t in zip(self.params, self._sumsq, strict=True)
        ]
        sums = [
            torch.zeros_like(p) if t is None else t
            for p, t in zip(self.params, self._sum, strict=True)
        ]
        return DiagStats(sumsq=sumsq, sum=sums, count=self.count, batch_size=self.batch_size)


class GramRecorder(_LayerRecorder):
    """Context manager: records the Gram matrix G Gᵀ of per-example gradients (all tracked
    parameters), layer by layer, over `rows` (None = the whole batch).

    For a linear layer on (b, in) inputs the layer's Gram is (δδᵀ) ⊙ (aaᵀ) (+ δδᵀ for the
    bias), with no per-example gradient formed; convolutions form one layer's per-example
    gradients at a time. Accumulated in float64.
    """

    def __init__(
        self,
        model: nn.Module,
        weights: Tensor | float,
        params: list[Tensor] | None = None,
        rows: Tensor | None = None,
    ):
        super().__init__(model, rows, weights, params)
        self._gram: Tensor | None = None

    def __enter__(self) -> GramRecorder:
        return super().__enter__()

    def _accumulate(self, layer: _Layer, a: Tensor, d: Tensor) -> None:
        m = layer.module
        b = d.shape[0]
        gram = torch.zeros(b, b, dtype=torch.float64, device=d.device)
        if layer.weight is not None:
            if _is_plain_linear(m, a):
                gram += (d.mm(d.t()) * a.mm(a.t())).double()
            else:
                self._add_layer_gram(gram, m, a, d)
        if layer.bias is not None:
            gb = _per_example_bias(m, d)
            gram += gb.mm(gb.t()).double()
        self._gram = gram if self._gram is None else self._gram + gram

    @staticmethod
    def _add_layer_gram(gram: Tensor, m: nn.Module, a: Tensor, d: Tensor) -> None:
        """Blocks G_i G_jᵀ of one layer's per-example gradients, chunk by chunk; when the
        layer's gradients do not fit in one chunk, chunks are recomputed rather than stored."""
        chunks = _chunks(m, a, d)
        if len(chunks) == 1:
            g = _per_example_weight(m, a, d).flatten(1)
            gram += g.mm(g.t()).double()
            return
        for i, ci in enumerate(chunks):
            gi = _per_example_weight(m, a[ci], d[ci]).flatten(1)
            gram[ci, ci] += gi.mm(gi.t()).double()
            for cj in chunks[i + 1 :]:
                block = gi.mm(_per_example_weight(m, a[cj], d[cj]).flatten(1).t()).double()
                gram[ci, cj] += block
                gram[cj, ci] += block.t()

    def result(self) -> Tensor:
        """The b×b Gram matrix (float64), b = len(rows) or the batch size."""
        if self.count is None:
            raise RuntimeError("no forward pass was recorded")
        if self._gram is None:
            dev = self.params[0].device if self.params else None
            return torch.zeros(self.count, self.count, dtype=torch.float64, device=dev)
        return self._gram


# --------------------------------------------------------------------------- reference
def per_example_grads(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    params: list[Tensor] | None = None,
) -> list[Tensor]:
    """Dense per-example gradients (B, *p.shape) of loss_fn(model(x_n), y_n) via torch.func.

    A correctness reference for tests and small probes; far too slow for the training path.
    """
    from torch.func import functional_call, grad, vmap

    named = dict(model.named_parameters())
    wanted = params if params is not None else [p for p in named.values() if p.requires_grad]
    ids = {id(p) for p in wanted}
    train = {n: p.detach() for n, p in named.items() if id(p) in ids}
    fixed = {n: p.detach() for n, p in named.items() if id(p) not in ids}
    fixed.update(dict(model.named_buffers()))
    names = [n for n, p in named.items() if id(p) in ids]
    order = {id(p): n for n, p in named.items()}

    def loss_one(tp: dict[str, Tensor], xn: Tensor, yn: Tensor) -> Tensor:
        out = functional_call(model, {**tp, **fixed}, (xn.unsqueeze(0),))
        return loss_fn(out, yn.unsqueeze(0)).sum()

    grads = vmap(grad(loss_one), in_dims=(None, 0, 0))(train, x, y)
    by_name = {n: grads[n] for n in names}
    return [by_name[order[id(p)]] for p in wanted]
