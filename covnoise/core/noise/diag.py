"""Diagonal noise, K = diag(C): ξ = √c √v ⊙ z."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from covnoise.core.noise import compiled
from covnoise.core.noise.diagstats import DiagStatsNoise
from covnoise.core.pergrad import DiagStats
from covnoise.core.pergrad.diag import count_scale


class DiagNoise(DiagStatsNoise):
    """K = diag(C): ξ = √c √v ⊙ z."""

    name = "diag"

    def _scale_from(self, stats: DiagStats) -> list[Tensor]:
        """√(c·v) per parameter (c folded into the variance's scaling): one pass per parameter
        by the compiled kernel for contiguous float32 statistics on the CPU, else
        `DiagStats.std` (four list operations; the same up to float32 roundings)."""
        kernel = compiled.load()
        if kernel is None or not all(map(_kernel_ready, stats.sumsq, stats.sum)):
            return stats.std(factor=self.c)
        b, scale = count_scale(stats.count, stats.batch_size)
        out = [torch.empty_like(t) for t in stats.sumsq]
        for o, sq, s in zip(out, stats.sumsq, stats.sum, strict=True):
            kernel.diag_std(o.data_ptr(), sq.data_ptr(), s.data_ptr(), o.numel(), scale * self.c, b)
        return out

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


def _kernel_ready(sq: Tensor, s: Tensor) -> bool:
    """Whether the compiled scale can read this parameter's statistics as they are."""
    return (
        sq.device.type == "cpu"
        and sq.dtype == s.dtype == torch.float32
        and sq.shape == s.shape
        and sq.is_contiguous()
        and s.is_contiguous()
    )
