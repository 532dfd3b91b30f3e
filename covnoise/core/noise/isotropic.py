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

    def _add_noise(self, grads: list[Tensor], z: list[Tensor], scale: Tensor) -> list[Tensor]:
        """g + σ z into z, in one pass per parameter; σ is read as a number on the CPU (free
        there), kept on the device elsewhere (no read-back: z is scaled first)."""
        if scale.device.type == "cpu":
            sigma = scale.item()
            for g, t in zip(grads, z, strict=True):
                torch.add(g, t, alpha=sigma, out=t)
            return z
        torch._foreach_mul_(z, scale.to(z[0].dtype))
        torch._foreach_add_(z, grads)
        return z

    def _probe_scale(
        self, v: list[Tensor], trace_c: float, n_params: int
    ) -> tuple[float, list[Tensor]]:
        """‖(c·tr C/P) I‖_F = c·tr C/√P; scale √(c·tr C/P) everywhere."""
        fro = self.c * trace_c / math.sqrt(n_params)
        iso = math.sqrt(self.c * trace_c / n_params)
        return fro, [torch.full_like(t, iso) for t in v]
