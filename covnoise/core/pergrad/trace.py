"""tr C without the per-coordinate Σ_n g_n²: what the isotropic noise structure needs.

tr v̂ = Σ_i v̂_i = s·Σ_n ‖g_n‖² − (s/b)·‖Σ_n g_n‖² (s from `count_scale`), so the trace needs
each example's squared gradient norm, not each coordinate's Σ_n g_n². For a linear layer on
(b, in) inputs ‖g_n‖² = ‖δ_n‖²‖a_n‖² for the weight and ‖δ_n‖² for the bias: two row sums
of squares instead of the product (δ²)ᵀ(a²), which costs as much as the layer's weight
gradient (a third of a plain step's matrix products when every row is recorded). Other
layers (convolutions, linear layers on sequences) record Σ_n g_n² per coordinate as
`DiagStatsRecorder` does, summed. Σ_n g_n per parameter is recorded as there (from the
backward's own gradient when it can be).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from covnoise.core.pergrad.diag import DiagStatsRecorder, _scaled, count_scale
from covnoise.core.pergrad.layers import is_plain_linear
from covnoise.core.pergrad.recorder import Layer


@dataclass
class TraceStats:
    """Σ_n ‖g_n‖² (0-d, float64) and Σ_n g_n over the sub-batch rows, per parameter."""

    sumsq: list[Tensor]
    sum: list[Tensor]
    count: int
    batch_size: int | None = None

    @property
    def n_params(self) -> int:
        """How many coordinates the statistics cover (P)."""
        return sum(t.numel() for t in self.sum)

    def total_variance(self, batch_size: int | None = None) -> Tensor:
        """Σ v = tr of the diag(C) estimate that `DiagStats.variance` would give on the same
        rows, 0-d in float64, clamped at zero (below it only by rounding). DiagStats clamps
        each coordinate, so where tr C is ~1e-7 of ‖ḡ‖² or less (the limit of float32
        gradients) the two differ: rounding here is symmetric, there it only adds."""
        b, scale = count_scale(self.count, self.batch_size if batch_size is None else batch_size)
        sumsq = torch.stack(self.sumsq).sum()
        norms = torch.stack(torch._foreach_norm(self.sum, 2, dtype=torch.float64))
        return (scale * sumsq - (scale / b) * norms.square().sum()).clamp_min(0.0)


class TraceStatsRecorder(DiagStatsRecorder):
    """`DiagStatsRecorder` for the trace only: records Σ_n ‖g_n‖² per parameter (plain linear
    layers from row norms, no extra matrix product) and Σ_n g_n; `result()` is TraceStats."""

    def _accumulate(self, layer: Layer, a: Tensor, d: Tensor, k: float = 1.0) -> None:
        """‖g_n‖² summed over the rows from a and k·δ; other layers as DiagStatsRecorder."""
        if not is_plain_linear(layer.module, a):
            super()._accumulate(layer, a, d, k)
            return
        lazy = self._sum_from_grad()
        d_rows = _row_sq_norms(d)  # ‖δ_n‖²
        k2 = k * k
        if layer.weight is not None:
            sq = torch.dot(d_rows, _row_sq_norms(a)) * k2
            self._add(layer.weight, sq, lambda: _scaled(d.t().mm(a), k), lazy)
        if layer.bias is not None:
            self._add(layer.bias, d_rows.sum() * k2, lambda: _scaled(d.sum(0), k), lazy)

    def result(self) -> TraceStats:  # type: ignore[override]
        """Statistics per parameter, in the order of `params` (zeros for unused layers)."""
        diag = super().result()
        return TraceStats(
            sumsq=[t if t.dim() == 0 else t.sum(dtype=torch.float64) for t in diag.sumsq],
            sum=diag.sum,
            count=diag.count,
            batch_size=diag.batch_size,
        )


def _row_sq_norms(t: Tensor) -> Tensor:
    """‖t_n‖² of each row of a (b, k) tensor, (b,) in float64: one fused norm per row in the
    tensor's dtype (a float64 copy of t costs more than the layer's products), then squared
    in float64."""
    return torch.linalg.vector_norm(t, dim=1).double().square()
