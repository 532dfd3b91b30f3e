"""Isotropic noise, K = (tr C / P) I: the same trace as diag and full, no structure."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from covnoise.core.noise.diagstats import DiagStatsNoise


class IsotropicNoise(DiagStatsNoise):
    """K = (tr C / P) I: ξ = √(c·tr C/P) z, the same trace as diag and full."""

    name = "isotropic"

    def _scale(self, v: Tensor) -> Tensor:
        return (v.sum(dtype=torch.float64) * (self.c / v.numel())).sqrt().to(v.dtype)

    def _probe_scale(
        self, v: list[Tensor], trace_c: float, n_params: int
    ) -> tuple[float, list[Tensor]]:
        """‖(c·tr C/P) I‖_F = c·tr C/√P; scale √(c·tr C/P) everywhere."""
        fro = self.c * trace_c / math.sqrt(n_params)
        iso = math.sqrt(self.c * trace_c / n_params)
        return fro, [torch.full_like(t, iso) for t in v]
