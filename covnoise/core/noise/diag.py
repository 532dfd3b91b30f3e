"""Diagonal noise, K = diag(C): ξ = √c √v ⊙ z."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from covnoise.core.noise.diagstats import DiagStatsNoise, shaped_like
from covnoise.core.pergrad import DiagStats


class DiagNoise(DiagStatsNoise):
    """K = diag(C): ξ = √c √v ⊙ z."""

    name = "diag"
    #: (the kept scale, the dtype, its per-parameter views): `_scale_parts`' cache
    _parts: tuple[Tensor, torch.dtype, list[Tensor]] | None = None

    def _scale_from(self, stats: DiagStats) -> Tensor:
        """√(c·v) in the refresh's own flat buffer (c folded into the variance's scaling)."""
        return stats.variance_flat(factor=self.c).sqrt_()

    def _add_noise(self, grads: list[Tensor], z: list[Tensor], scale: Tensor) -> list[Tensor]:
        """g + s ⊙ z into z, in one pass per parameter, s the kept √(c·v) split like z."""
        for g, s, t in zip(grads, self._scale_parts(scale, z), z, strict=True):
            torch.addcmul(g, s, t, out=t)
        return z

    def _scale_parts(self, scale: Tensor, z: list[Tensor]) -> list[Tensor]:
        """The kept flat scale viewed per parameter like z (in z's dtype), made once per
        refresh and reused by the steps in between (the scale is never changed in place)."""
        cached = self._parts
        if cached is not None and cached[0] is scale and cached[1] == z[0].dtype:
            return cached[2]
        flat = scale if scale.dtype == z[0].dtype else scale.to(z[0].dtype)
        parts = shaped_like(flat.split([t.numel() for t in z]), z)
        self._parts = (scale, z[0].dtype, parts)
        return parts

    def _probe_scale(
        self, v: list[Tensor], trace_c: float, n_params: int
    ) -> tuple[float, list[Tensor]]:
        """‖c·diag(v)‖_F = c‖v‖; scale √(c·v)."""
        fro = self.c * math.sqrt(sum(float(t.double().pow(2).sum()) for t in v))
        return fro, [t.mul(self.c).sqrt() for t in v]
