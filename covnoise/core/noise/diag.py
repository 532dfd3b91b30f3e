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

    def _scale_from(self, stats: DiagStats) -> Tensor:
        """√(c·v) in the refresh's own flat buffer (c folded into the variance's scaling)."""
        return stats.variance_flat(factor=self.c).sqrt_()

    def _add_noise(
        self, grads: list[Tensor], z: list[Tensor], scale: Tensor, sizes: list[int]
    ) -> list[Tensor]:
        """g + s ⊙ z into z, in one pass per parameter, s the kept √(c·v) split like z."""
        if scale.dtype != z[0].dtype:
            scale = scale.to(z[0].dtype)
        for g, s, t in zip(grads, scale.split(sizes), z, strict=True):
            torch.addcmul(g, s.view(t.shape), t, out=t)
        return z

    def _probe_scale(
        self, v: list[Tensor], trace_c: float, n_params: int
    ) -> tuple[float, list[Tensor]]:
        """‖c·diag(v)‖_F = c‖v‖; scale √(c·v)."""
        fro = self.c * math.sqrt(sum(float(t.double().pow(2).sum()) for t in v))
        return fro, [t.mul(self.c).sqrt() for t in v]
