"""Isotropic noise, K = (tr C / P) I: the same trace as diag and full, no structure."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from covnoise.core.noise.base import StatsKind
from covnoise.core.noise.diagstats import DiagStatsNoise
from covnoise.core.pergrad import DiagStats, TraceStats


class IsotropicNoise(DiagStatsNoise):
    """K = (tr C / P) I: ξ = √(c·tr C/P) z, the same trace as diag and full."""

    name = "isotropic"
    #: tr C is all it needs: per-example gradient norms, no per-coordinate product
    stats_kind: StatsKind = "trace"

    def _scale_from(self, stats: DiagStats | TraceStats) -> Tensor:
        """σ = √(c·Σv/P), 0-d in the gradients' dtype (Σv summed in float64)."""
        return (stats.total_variance() * (self.c / stats.n_params)).sqrt().to(stats.sum[0].dtype)

    def _add_noise(
        self, grads: list[Tensor], z: list[Tensor], scale: Tensor, inplace: bool
    ) -> list[Tensor]:
        """g + σ z, one fused list operation, as new tensors or (`inplace`) into `grads`; σ
        is read as a number on the CPU (free there), kept on the device elsewhere (no
        read-back: z is scaled first)."""
        if scale.device.type == "cpu":
            if inplace:
                torch._foreach_add_(grads, z, alpha=scale.item())
                return list(grads)
            return list(torch._foreach_add(grads, z, alpha=scale.item()))
        return add_scaled_on_device(grads, z, scale, inplace)

    def _probe_scale(
        self, v: list[Tensor], trace_c: float, n_params: int
    ) -> tuple[float, list[Tensor]]:
        """‖(c·tr C/P) I‖_F = c·tr C/√P; scale √(c·tr C/P) everywhere."""
        fro = self.c * trace_c / math.sqrt(n_params)
        iso = math.sqrt(self.c * trace_c / n_params)
        return fro, [torch.full_like(t, iso) for t in v]


def add_scaled_on_device(
    grads: list[Tensor], z: list[Tensor], scale: Tensor, inplace: bool
) -> list[Tensor]:
    """g + σ z with σ a 0-d tensor kept where it is (no read-back on an accelerator): z is
    scaled first, then added to the gradients (`inplace`) or the gradients to it."""
    noisy = torch._foreach_mul(z, scale.to(z[0].dtype))
    if inplace:
        torch._foreach_add_(grads, noisy)
        return list(grads)
    torch._foreach_add_(noisy, grads)
    return list(noisy)
