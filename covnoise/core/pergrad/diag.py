"""Σ_n g_n² and Σ_n g_n per coordinate, and the unbiased diag(C) estimate built from them.

This is what the diagonal and isotropic noise structures need. For a linear layer on (b, in)
inputs Σ_n g_n² = (δ²)ᵀ(a²): one extra matrix product, no per-example gradient formed;
other layers form their per-example weight gradients chunk by chunk.
"""

from __future__ import annotations

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


class DiagStatsRecorder(LayerRecorder):
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

    def _accumulate(self, layer: Layer, a: Tensor, d: Tensor) -> None:
        m = layer.module
        if is_plain_linear(m, a):  # (δ²)ᵀ(a²) and δᵀa; the bias from the same δ²
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
            for c in chunks(m, a, d):
                g = per_example_weight(m, a[c], d[c])
                sq += (g * g).sum(0)
                s += g.sum(0)
            self._add(layer.weight, sq.view(wshape), s.view(wshape))
        if layer.bias is not None:
            gb = per_example_bias(m, d)
            self._add(layer.bias, (gb * gb).sum(0), gb.sum(0))

    def _add(self, i: int, sq: Tensor, s: Tensor) -> None:
        if self._sumsq[i] is None:
            self._sumsq[i], self._sum[i] = sq, s
        else:
            self._sumsq[i] = self._sumsq[i] + sq
            self._sum[i] = self._sum[i] + s

    def result(self) -> DiagStats:
        """Statistics per parameter, in the order of `params` (zeros for unused layers)."""
        self._check_recorded()
        sumsq = [
            torch.zeros_like(p) if t is None else t
            for p, t in zip(self.params, self._sumsq, strict=True)
        ]
        sums = [
            torch.zeros_like(p) if t is None else t
            for p, t in zip(self.params, self._sum, strict=True)
        ]
        return DiagStats(sumsq=sumsq, sum=sums, count=self.count, batch_size=self.batch_size)
