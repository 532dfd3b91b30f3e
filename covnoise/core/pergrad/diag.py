"""Σ_n g_n² and Σ_n g_n per coordinate, and the unbiased diag(C) estimate built from them.

This is what the diagonal noise structure needs (isotropic needs only their trace:
covnoise.core.pergrad.trace). For a linear layer on (b, in) inputs Σ_n g_n² = (δ²)ᵀ(a²): one
extra matrix product, no per-example gradient formed; other layers form their per-example
weight gradients chunk by chunk. Σ_n g_n is the batch gradient autograd forms anyway
(divided by the common loss weight) whenever the statistics cover the whole batch with equal
weights; only a sub-batch, unequal weights or a backward that forms no parameter gradient
compute it from (a, δ) (`DiagStatsRecorder`). With equal weights w, δ is not rescaled: the
results are multiplied by 1/w and 1/w² instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from covnoise.core.pergrad.layers import (
    chunks,
    is_plain_linear,
    per_example_bias,
    per_example_weight,
)
from covnoise.core.pergrad.recorder import Layer, LayerRecorder


@dataclass
class DiagStats:
    """Σ_n g_n² and Σ_n g_n over the sub-batch rows, one tensor per parameter."""

    sumsq: list[Tensor]
    sum: list[Tensor]
    count: int
    batch_size: int | None = None

    def variance(self, batch_size: int | None = None, factor: float = 1.0) -> list[Tensor]:
        """Unbiased estimate of diag(C) of the whole batch (population variance over B rows),
        times `factor`, per parameter, in three fused list operations.

        With b = count rows drawn without replacement from B, the sample variance with
        denominator b − 1 is unbiased for the finite-population variance with denominator
        B − 1, so it is scaled by (B − 1)/B. With b = B this is exactly the population
        variance. Clamped at zero (negative values can only come from rounding).
        """
        b, scale = self._count_scale(batch_size)
        a = scale * factor  # Σg²·a − (Σg)²·a/b
        out = torch._foreach_mul(self.sumsq, a)
        torch._foreach_addcmul_(out, self.sum, self.sum, value=-a / b)
        torch._foreach_clamp_min_(out, 0.0)
        return list(out)

    def std(self, batch_size: int | None = None, factor: float = 1.0) -> list[Tensor]:
        """√(factor · v) per parameter, v = `variance`: the diagonal noise's scale."""
        out = self.variance(batch_size, factor)
        torch._foreach_sqrt_(out)
        return out

    def total_variance(self, batch_size: int | None = None) -> Tensor:
        """Σ v = tr of the diag(C) estimate, 0-d in float64 (TraceStats gives the same trace
        without the per-coordinate sums of squares)."""
        v = self.variance(batch_size)
        return torch.stack(torch._foreach_norm(v, 1, dtype=torch.float64)).sum()

    @property
    def n_params(self) -> int:
        """How many coordinates the statistics cover (P)."""
        return sum(t.numel() for t in self.sumsq)

    def _count_scale(self, batch_size: int | None) -> tuple[int, float]:
        return count_scale(self.count, self.batch_size if batch_size is None else batch_size)


def count_scale(b: int, B: int | None) -> tuple[int, float]:
    """(b, the factor turning Σg² − (Σg)²/b over b rows into the unbiased estimate of the
    population variance of a batch of B): 1/b when b = B, else (B − 1)/(B(b − 1))."""
    if B is None:
        raise ValueError("variance: batch_size is unknown; pass it explicitly")
    if b > B:
        raise ValueError(f"variance: {b} rows cannot come from a batch of {B}")
    if b == B:
        return b, 1.0 / b
    if b >= 2:
        return b, (B - 1) / (B * (b - 1))
    raise ValueError("variance: a sub-batch needs at least 2 rows")


class DiagStatsRecorder(LayerRecorder):
    """Context manager: records Σ_n g_n² and Σ_n g_n over `rows` during one backward.

    `weights` are the per-example loss weights of the backpropagated loss Σ_n w_n l_n (a
    tensor of shape (B,) or one float, normally 1/B). `rows` (distinct indices into the
    batch, None = all) is the sub-batch the statistics are computed on. Call `result()` after
    backward (inside or after the `with` block).

    Σ_n g_n is not computed when autograd computes it anyway: when the rows are the whole
    batch and the weights are one value w, the parameter's gradient of this backward (seen by
    a tensor hook on the parameter, so an earlier .grad does not matter) is w Σ_n g_n, and
    Σ_n g_n = gradient / w. That saves the product δᵀa of every linear layer (a third of a
    plain step's matrix products). It assumes what the recorders assume everywhere: the
    backpropagated loss is Σ_n w_n l_n and the parameter is used only by its layer. Sub-batch
    rows, unequal weights and `backward(loss)` (no parameter gradients) compute the sum from
    (a, δ); so does `result()` for a parameter whose gradient the backward did not form.

    With `read_grads`, for a block whose one backward is ``loss.backward()`` into .grad fields
    that are all None on entry (a training step after ``zero_grad``), the sums are read from
    the .grad fields on leaving the block, all in one fused multiply by 1/w, instead of by a
    hook per parameter (whose reference to the gradient also made autograd copy it into
    .grad). When a .grad is set on entry, the hooks are used as without it.
    """

    _defer_scale = True  # equal weights: δ arrives unscaled, the sums are scaled instead

    def __init__(
        self,
        model: nn.Module,
        rows: Tensor | None,
        weights: Tensor | float,
        params: list[Tensor] | None = None,
        *,
        read_grads: bool = False,
    ):
        super().__init__(model, rows, weights, params)
        self._read_grads = read_grads
        self._sumsq: list[Tensor | None] = [None] * len(self.params)
        self._sum: list[Tensor | None] = [None] * len(self.params)
        # Σ_n g_n still to come from the parameter's gradient: i → the fallback from (a, δ)
        self._pending: dict[int, Callable[[], Tensor]] = {}
        self._to_outputs = False

    def __enter__(self) -> DiagStatsRecorder:
        super().__enter__()
        self._read_grads = self._read_grads and all(p.grad is None for p in self.params)
        if not self._read_grads:
            for i, p in enumerate(self.params):
                if p.requires_grad:
                    self._handles.append(p.register_hook(self._grad_hook(i)))
        return self

    def __exit__(self, *exc: object) -> None:
        if self._read_grads and exc[0] is None and self._pending:
            # the .grad of the one backward in the block is w Σ_n g_n
            formed = [i for i in self._pending if self.params[i].grad is not None]
            if formed:
                grads = [self.params[i].grad.detach() for i in formed]
                sums = torch._foreach_mul(grads, self._uniform_inv_w)
                for i, s in zip(formed, sums, strict=True):
                    self._sum[i] = s
                    del self._pending[i]
        super().__exit__(*exc)

    def backward(self, loss: Tensor) -> None:
        """`LayerRecorder.backward`; the sums are computed from (a, δ) (no parameter
        gradient is formed, or a parameter gradient of a loss on other rows)."""
        self._to_outputs = True
        try:
            super().backward(loss)
        finally:
            self._to_outputs = False

    def _grad_hook(self, i: int) -> Callable[[Tensor], None]:
        def hook(grad: Tensor) -> None:
            if self._pending.pop(i, None) is not None:
                self._sum[i] = grad.detach() * self._uniform_inv_w

        return hook

    def _sum_from_grad(self) -> bool:
        """Whether Σ_n g_n comes from the parameter gradient (see the class docstring)."""
        return self.rows is None and not self._to_outputs and self._uniform_inv_w is not None

    def _accumulate(self, layer: Layer, a: Tensor, d: Tensor, k: float = 1.0) -> None:
        """Σg² and Σg of one layer from its input a and k·δ (the per-example δ_n/w_n)."""
        m = layer.module
        lazy = self._sum_from_grad()
        k2 = k * k
        if is_plain_linear(m, a):  # (δ²)ᵀ(a²) (and δᵀa unless lazy); the bias from the same δ²
            d2 = d * d
            # k² folded into the product (beta = 0: the input is ignored, but it must be on
            # the operands' device: CUDA's addmm checks every argument)
            if layer.weight is not None:
                sq = torch.addmm(d2.new_zeros(()), d2.t(), a * a, beta=0, alpha=k2)
                self._add(layer.weight, sq, lambda: _scaled(d.t().mm(a), k), lazy)
            if layer.bias is not None:
                self._add(layer.bias, _scaled(d2.sum(0), k2), lambda: _scaled(d.sum(0), k), lazy)
            return
        if k != 1.0:
            d = d * k
        if layer.weight is not None:
            self._add_conv_weight(layer, a, d, lazy)
        if layer.bias is not None:
            gb = per_example_bias(m, d)
            self._add(layer.bias, (gb * gb).sum(0), lambda: gb.sum(0), lazy)

    def _add_conv_weight(self, layer: Layer, a: Tensor, d: Tensor, lazy: bool) -> None:
        """Per-example weight gradients chunk by chunk: Σg², and Σg unless `lazy`."""
        m = layer.module
        wshape = m.weight.shape
        sq = torch.zeros(wshape[0], m.weight[0].numel(), dtype=d.dtype, device=d.device)
        s = None if lazy else torch.zeros_like(sq)
        for c in chunks(m, a, d):
            g = per_example_weight(m, a[c], d[c])
            sq += (g * g).sum(0)
            if s is not None:
                s += g.sum(0)
        self._add(
            layer.weight,
            sq.view(wshape),
            (lambda: _weight_sum(m, a, d).view(wshape)) if s is None else s.view(wshape),
            lazy,
        )

    def _add(
        self, i: int, sq: Tensor, s: Tensor | Callable[[], Tensor], lazy: bool = False
    ) -> None:
        """Add a layer's Σg² and Σg (a tensor, or when `lazy` its fallback computation)."""
        if lazy and self._sumsq[i] is None:
            self._sumsq[i] = sq
            self._pending[i] = s if callable(s) else (lambda: s)
            return
        s = s() if callable(s) else s
        if self._sumsq[i] is None:
            self._sumsq[i], self._sum[i] = sq, s
        else:
            self._sumsq[i] = self._sumsq[i] + sq
            self._sum[i] = self._sum[i] + s

    def result(self) -> DiagStats:
        """Statistics per parameter, in the order of `params` (zeros for unused layers)."""
        self._check_recorded()
        for i, fallback in list(self._pending.items()):  # gradients the backward did not form
            self._sum[i] = fallback()
            del self._pending[i]
        sumsq = [
            torch.zeros_like(p) if t is None else t
            for p, t in zip(self.params, self._sumsq, strict=True)
        ]
        sums = [
            torch.zeros_like(p) if t is None else t
            for p, t in zip(self.params, self._sum, strict=True)
        ]
        return DiagStats(sumsq=sumsq, sum=sums, count=self.count, batch_size=self.batch_size)


def _scaled(t: Tensor, k: float) -> Tensor:
    return t if k == 1.0 else t.mul_(k)


def _weight_sum(m: nn.Module, a: Tensor, d: Tensor) -> Tensor:
    """Σ_n of the per-example weight gradients, chunk by chunk (flattened per output)."""
    total = None
    for c in chunks(m, a, d):
        s = per_example_weight(m, a[c], d[c]).sum(0)
        total = s if total is None else total + s
    return total
