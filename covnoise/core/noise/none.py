"""No noise: plain large-batch SGD, K = 0."""

from __future__ import annotations

import torch
from torch import Tensor

from covnoise.core.noise.base import NoiseState, Structure
from covnoise.core.noise.probe import Probe, ProbeNoise
from covnoise.core.pergrad import DiagStats, TraceStats


class NoNoise(Structure):
    """Plain large-batch SGD: K = 0."""

    name = "none"

    def update(
        self,
        grads: list[Tensor],
        state: NoiseState,
        stats: DiagStats | TraceStats | None,
        generator: torch.Generator,
        *,
        inplace: bool = False,
    ) -> tuple[list[Tensor], NoiseState]:
        """Gradients unchanged."""
        return list(grads), self._advance(state)

    def statistics(self, probe: Probe) -> ProbeNoise:
        """Σ = 0: nothing to measure and nothing to draw."""
        return ProbeNoise(trace=0.0, fro=0.0)
