"""Diagonal noise, K = diag(C): ξ = √c √v ⊙ z."""

from __future__ import annotations

import math

from torch import Tensor

from covnoise.core.noise.diagstats import DiagStatsNoise


class DiagNoise(DiagStatsNoise):
    """K = diag(C): ξ = √c √v ⊙ z."""

    name = "diag"

    def _scale(self, v: Tensor) -> Tensor:
        return v.mul(self.c).sqrt_()

    def _probe_scale(
        self, v: list[Tensor], trace_c: float, n_params: int
    ) -> tuple[float, list[Tensor]]:
        """‖c·diag(v)‖_F = c‖v‖; scale √(c·v)."""
        fro = self.c * math.sqrt(sum(float(t.double().pow(2).sum()) for t in v))
        return fro, [t.mul(self.c).sqrt() for t in v]
