"""Diagonal noise, K = diag(C): ξ = √c √v ⊙ z."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from covnoise.core.noise.diagstats import DiagStatsNoise
from covnoise.core.pergrad import DiagStats


class DiagNoise(DiagStatsNoise):
    """K = diag(C): ξ = √c √v ⊙ z."""

    name = "diag"

    def _scale_from(self, stats: DiagStats) -> list[Tensor]:
        """√(c·v) per parameter (c folded into the variance's scaling)."""
        return stats.std(factor=self.c)

    def _add_noise(
        self, grads: list[Tensor], z: list[Tensor], scale: list[Tensor], inplace: bool
    ) -> list[Tensor]:
        """g + s ⊙ z per parameter, one fused list operation, s the kept √(c·v)."""
        if scale[0].dtype != z[0].dtype:
            scale = [s.to(z[0].dtype) for s in scale]
        if inplace:
            torch._foreach_addcmul_(grads, scale, z)
            return list(grads)
        return list(torch._foreach_addcmul(grads, scale, z))

    def _probe_scale(
        self, v: list[Tensor], trace_c: float, n_params: int
    ) -> tuple[float, list[Tensor]]:
        """‖c·diag(v)‖_F = c‖v‖; scale √(c·v)."""
        fro = self.c * math.sqrt(sum(float(t.double().pow(2).sum()) for t in v))
        return fro, [t.mul(self.c).sqrt() for t in v]
